"""Returning clients resume their TLS session (tickets), unless resumption is switched off."""

from __future__ import annotations

import http.client
import socket
import ssl
from typing import Any

import pytest


def _connect(bp: Any, ctx: ssl.SSLContext,
             session: ssl.SSLSession | None) -> tuple[ssl.SSLSession | None, bool]:
    """One request on a new connection offering ``session``: (the session to offer next time,
    whether this one was resumed)."""
    raw = socket.create_connection(("127.0.0.1", bp.port), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session)
    conn = http.client.HTTPSConnection("127.0.0.1", bp.port, context=ctx)
    conn.sock = sock
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().read()
        return sock.session, sock.session_reused
    finally:
        conn.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_returning_client_resumes_its_tls_session(broker) -> None:  # type: ignore[no-untyped-def]
    ctx = ssl.create_default_context(cafile=str(broker.cafile))
    session, reused = _connect(broker, ctx, None)
    assert not reused and session is not None
    _session, reused = _connect(broker, ctx, session)
    assert reused


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_resumption_can_be_switched_off(broker_factory,  # type: ignore[no-untyped-def]
                                        migrated_url: str) -> None:
    bp = broker_factory(migrated_url, BROKER_SERVER_TLS_SESSION_RESUMPTION="false")
    ctx = ssl.create_default_context(cafile=str(bp.cafile))
    session, reused = _connect(bp, ctx, None)
    assert not reused
    _session, reused = _connect(bp, ctx, session)
    assert not reused
