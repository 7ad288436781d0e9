"""One deadline of ``timeout_s`` for a whole LDAP lookup: a pooled connection the server drops
late, then a server that accepts new connections and never answers, still ends within
``timeout_s`` (before, the retry on a new connection had a ``timeout_s`` of its own: up to
2 × ``timeout_s``); a server that is back after the drop answers through the retry.

A TCP relay in front of the real slapd plays the server's moods: ``pass`` relays, ``drop``
holds what a connection made before the switch sends for ``delay`` seconds and then closes
it, ``silent`` accepts new connections and never says a word.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from broker.codes import Code
from broker.errors import BrokerError
from broker.pki import issue
from broker.pki.identity import identity_of
from broker.service import ldapdir
from tests.support.ldapserver import Slapd

pytestmark = pytest.mark.slow


class Relay:
    """A loopback TCP relay to ``upstream`` whose mood the test sets: ``drop(delay)`` makes
    every connection made so far hold its next request ``delay`` seconds and then close;
    ``silent`` makes new connections accepted and never answered."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.silent = False
        self.drop_before = 0  # connections numbered below this are dropped
        self.delay = 0.0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.socks: list[socket.socket] = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def drop(self, delay: float) -> None:
        self.delay, self.drop_before = delay, self.accepted

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            number = self.accepted
            self.accepted += 1
            self.socks.append(client)
            if self.silent:
                continue  # accepted (TCP is up) and never answered
            server = socket.create_connection(self.upstream)
            self.socks.append(server)
            threading.Thread(target=self._pipe, args=(client, server, number),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, None),
                             daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, number: int | None) -> None:
        try:
            while data := src.recv(65536):
                if number is not None and number < self.drop_before:
                    # The server goes quiet for a while, then drops the connection (an
                    # idle timeout, a restart under load).
                    time.sleep(self.delay)
                    for s in (src, dst):
                        s.shutdown(socket.SHUT_RDWR)
                    return
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


@pytest.fixture
def relay(slapd: Slapd) -> Iterator[Relay]:
    r = Relay((slapd.host, slapd.ldaps_port))
    yield r
    r.close()


def _settings(slapd: Slapd, relay: Relay, tmp_path: Path, timeout_s: int) -> Any:
    secret = slapd.write_secret(tmp_path / "ldap.secret")
    row = SimpleNamespace(
        id=f"d{uuid.uuid4().hex[:6]}", certmap=["email"],
        ldap_url=f"ldaps://127.0.0.1:{relay.port}", ldap_start_tls=False,
        ldap_ca_file=str(slapd.ca_file), ldap_flavour="generic", ldap_base_dn=slapd.base_dn,
        ldap_bind_dn=slapd.svc_dn, ldap_bind_password_file=str(secret),
        ldap_user_name_attribute=None, ldap_user_filter=None, ldap_attributes=None,
        ldap_required_groups=[], ldap_cache_ttl_s=0, ldap_timeout_s=timeout_s)
    return ldapdir.settings_of(row)


def _card(slapd: Slapd) -> tuple[Any, bytes]:
    uid = f"dl-{uuid.uuid4().hex[:8]}"
    slapd.person(uid, mail=f"{uid}@corp.example")
    cert = issue.make_user_cert(issue.make_root("R"), uid, email=f"{uid}@corp.example")
    return identity_of(cert.cert), cert.cert_der()


def test_a_late_drop_then_a_silent_server_ends_within_one_timeout(
        slapd: Slapd, relay: Relay, tmp_path: Path) -> None:
    timeout_s = 2
    s = _settings(slapd, relay, tmp_path, timeout_s)
    service = ldapdir.LdapDirectories()
    ident, der = _card(slapd)
    assert service.lookup(s, ident, der, ["email"]).rule == "email"  # pools a connection

    relay.drop(1.5)  # the pooled connection: dropped after 1.5 s
    relay.silent = True  # new connections: never answered
    started = time.monotonic()
    with pytest.raises(BrokerError) as refused:
        service.lookup(s, ident, der, ["email"])
    took = time.monotonic() - started
    print(f"drop after 1.5 s, then silent: refused after {took:.2f} s (timeout_s {timeout_s})")
    assert refused.value.code == Code.DIRECTORY_UNAVAILABLE
    assert 1.4 < took < timeout_s + 0.3  # the drop was waited for; the retry only for the rest
    assert relay.accepted >= 2  # the retry did try a new connection


def test_a_dropped_pooled_connection_is_retried_within_the_deadline(
        slapd: Slapd, relay: Relay, tmp_path: Path) -> None:
    s = _settings(slapd, relay, tmp_path, 3)
    service = ldapdir.LdapDirectories()
    ident, der = _card(slapd)
    service.lookup(s, ident, der, ["email"])
    relay.drop(0.5)  # the pooled connection is dropped; the server takes new ones
    accepted = relay.accepted
    started = time.monotonic()
    found = service.lookup(s, ident, der, ["email"])
    took = time.monotonic() - started
    assert found.rule == "email"
    assert relay.accepted == accepted + 1
    assert took < 3
    assert service.searches == 3  # the first lookup, the dropped search, its retry
    assert 0.5 < took
