"""TLS contexts: resumption settings, and rotation to a new context (a new ticket key)."""

from __future__ import annotations

from pathlib import Path

from OpenSSL import SSL

from broker.web.server import TlsContexts, dev_certificate

# pyOpenSSL has no get_options: set_options(0) adds nothing and returns the options in force.


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_resumption_issues_tickets_and_caches_sessions(tmp_path: Path) -> None:
    ctx = TlsContexts(dev_certificate(tmp_path), resumption=True, rotation_s=60,
                      clock=Clock()).getContext()
    assert not ctx.set_options(0) & SSL.OP_NO_TICKET
    assert ctx.get_session_cache_mode() == SSL.SESS_CACHE_SERVER


def test_without_resumption_there_are_no_tickets_and_no_cache(tmp_path: Path) -> None:
    ctx = TlsContexts(dev_certificate(tmp_path), resumption=False, rotation_s=60,
                      clock=Clock()).getContext()
    assert ctx.set_options(0) & SSL.OP_NO_TICKET
    assert ctx.get_session_cache_mode() == SSL.SESS_CACHE_OFF


def test_the_ticket_key_rotates_with_a_new_context(tmp_path: Path) -> None:
    clock = Clock()
    contexts = TlsContexts(dev_certificate(tmp_path), resumption=True, rotation_s=60,
                           clock=clock)
    first = contexts.getContext()
    clock.now += 59
    assert contexts.getContext() is first
    clock.now += 1
    assert contexts.getContext() is not first and contexts.rotations == 1
