"""The client API (/v1): registration, smart-card and password login, WorkSpaces, sessions."""

from __future__ import annotations

from klein import Klein

from broker.service.context import BrokerContext


def build_client_app(ctx: BrokerContext) -> Klein:
    app = Klein()
    return app
