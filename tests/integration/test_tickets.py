"""Ticket signing keys live in the database; tickets verify with only the JWKS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.service.tickets import KeyRing, jwks, verify
from broker.store.db import Database
from tests.support.jws import verify_es256


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def test_ticket_verifies_with_only_the_jwks(database: Database) -> None:
    NOW = now()  # noqa: N806 (the suite can run for minutes: take the time per test)
    ring = KeyRing(timedelta(days=30), timedelta(minutes=10))
    claims = {"sub": "alice", "exp": int((NOW + timedelta(minutes=5)).timestamp())}
    token = database.transaction(lambda s: ring.sign(s, claims, NOW))
    doc = database.transaction(lambda s: jwks(s, NOW))
    assert all("d" not in k for k in doc["keys"]), "private key material must not be published"
    assert verify(token, doc)["sub"] == "alice"
    assert verify_es256(token, doc)["sub"] == "alice", "an independent ES256 check agrees"
    head, body, sig = token.split(".")
    forged = f"{head}.{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}.{sig}"
    with pytest.raises(ValueError):
        verify_es256(forged, doc)


def test_expired_ticket_is_refused(database: Database) -> None:
    NOW = now()  # noqa: N806 (the suite can run for minutes: take the time per test)
    ring = KeyRing(timedelta(days=30), timedelta(minutes=10))
    token = database.transaction(lambda s: ring.sign(
        s, {"sub": "a", "exp": int((NOW - timedelta(minutes=1)).timestamp())}, NOW))
    with pytest.raises(Exception, match="expired|exp"):
        verify(token, database.transaction(lambda s: jwks(s, NOW)))


def test_rotation_keeps_the_old_key_published(database: Database) -> None:
    NOW = now()  # noqa: N806 (the suite can run for minutes: take the time per test)
    ring = KeyRing(timedelta(days=1), timedelta(minutes=10))
    exp = int((NOW + timedelta(days=3)).timestamp())
    old = database.transaction(lambda s: ring.sign(s, {"sub": "a", "exp": exp}, NOW))
    later = NOW + timedelta(days=2)
    new = database.transaction(lambda s: ring.sign(s, {"sub": "b", "exp": exp}, later))
    doc = database.transaction(lambda s: jwks(s, later))
    assert len(doc["keys"]) == 2
    assert verify(old, doc)["sub"] == "a" and verify(new, doc)["sub"] == "b"
    assert verify_es256(old, doc)["sub"] == "a" and verify_es256(new, doc)["sub"] == "b"


def test_a_second_process_signs_with_the_same_key(database: Database) -> None:
    NOW = now()  # noqa: N806 (the suite can run for minutes: take the time per test)
    exp = int((NOW + timedelta(minutes=5)).timestamp())
    a = KeyRing(timedelta(days=30), timedelta(minutes=10))
    b = KeyRing(timedelta(days=30), timedelta(minutes=10))
    database.transaction(lambda s: a.sign(s, {"exp": exp}, NOW))
    database.transaction(lambda s: b.sign(s, {"exp": exp}, NOW))
    assert len(database.transaction(lambda s: jwks(s, NOW))["keys"]) == 1
