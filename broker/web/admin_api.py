"""The admin API (/admin/v1), bound to loopback by default, Bearer admin tokens."""

from __future__ import annotations

from klein import Klein

from broker.service.context import BrokerContext


def build_admin_app(ctx: BrokerContext) -> Klein:
    app = Klein()
    return app
