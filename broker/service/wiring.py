"""Connects use cases to the running process: periodic sweeps, shared singletons."""

from __future__ import annotations

from broker.service.context import BrokerContext


def install(ctx: BrokerContext) -> None:
    """Register the periodic sweepers the server runs (expiries, idle WorkSpaces)."""
    from broker.service import sweeps

    ctx.sweepers.extend(sweeps.sweepers(ctx))
