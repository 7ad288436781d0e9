"""Returning clients resume their TLS session (tickets), unless resumption is switched off."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from typing import Any

import pytest


def _connect(bp: Any, ctx: ssl.SSLContext,
             session: ssl.SSLSession | None) -> tuple[ssl.SSLSession | None, bool, int]:
    """One request on a new connection to the admin listener (its /healthz names the pid)
    offering ``session``: (the session to offer next time, whether this one was resumed, the
    pid of the worker that answered)."""
    raw = socket.create_connection(("127.0.0.1", bp.admin_port), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session)
    conn = http.client.HTTPSConnection("127.0.0.1", bp.admin_port, context=ctx)
    conn.sock = sock
    try:
        conn.request("GET", "/healthz")
        body = json.loads(conn.getresponse().read())
        return sock.session, sock.session_reused, body["pid"]
    finally:
        conn.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_returning_client_resumes_its_tls_session(broker) -> None:  # type: ignore[no-untyped-def]
    ctx = ssl.create_default_context(cafile=str(broker.cafile))
    session, reused, _ = _connect(broker, ctx, None)
    assert not reused and session is not None
    _session, reused, _ = _connect(broker, ctx, session)
    assert reused
    assert '"ticket_keys": "per worker"' in broker.logs(), "shared keys are opt-in"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_resumption_can_be_switched_off(broker_factory,  # type: ignore[no-untyped-def]
                                        migrated_url: str) -> None:
    bp = broker_factory(migrated_url, BROKER_SERVER_TLS_SESSION_RESUMPTION="false")
    ctx = ssl.create_default_context(cafile=str(bp.cafile))
    session, reused, _ = _connect(bp, ctx, None)
    assert not reused
    _session, reused, _ = _connect(bp, ctx, session)
    assert not reused


@pytest.mark.postgres
def test_a_ticket_resumes_on_every_worker(broker_factory) -> None:  # type: ignore[no-untyped-def]
    """With server.tls_shared_ticket_keys (opt-in), workers of one supervisor share the ticket
    key: a session issued by one worker resumes on the other (with a key per worker about
    half of these connections would not)."""
    from tests.support.databases import postgres_schema_url

    with postgres_schema_url() as url:
        bp = broker_factory(url, workers=2, BROKER_SERVER_TLS_SHARED_TICKET_KEYS="true")
        ctx = ssl.create_default_context(cafile=str(bp.cafile))
        session, reused, first = _connect(bp, ctx, None)
        assert not reused
        resumed_on: dict[int, int] = {}
        deadline = time.monotonic() + 30
        tries = 0
        while (len(resumed_on) < 2 or tries < 20) and time.monotonic() < deadline:
            session, reused, pid = _connect(bp, ctx, session)
            tries += 1
            assert reused, f"connection {tries} to worker {pid} was not resumed " \
                           f"({resumed_on} resumed so far; first session from {first})"
            resumed_on[pid] = resumed_on.get(pid, 0) + 1
        assert len(resumed_on) == 2, resumed_on
        assert bp.stop() == 0


@pytest.mark.postgres
def test_a_crashing_ticket_key_probe_is_a_warning(broker_factory) -> None:  # type: ignore[no-untyped-def]
    """The shared-key lookup runs first in a child process; its crash (forced here, as a wrong
    symbol offset would crash) leaves each worker its own key and the broker serving."""
    from tests.support.databases import postgres_schema_url

    with postgres_schema_url() as url:
        bp = broker_factory(url, workers=2, BROKER_SERVER_TLS_SHARED_TICKET_KEYS="true",
                            SMARTCARD_BROKER_TICKET_PROBE_FAULT="segv")
        log = bp.logs()
        assert "TLS ticket keys cannot be shared by the workers" in log and "SIGSEGV" in log
        assert '"ticket_keys": "per worker"' in log
        ctx = ssl.create_default_context(cafile=str(bp.cafile))
        session, _, _ = _connect(bp, ctx, None)
        assert session is not None
        assert bp.stop() == 0
