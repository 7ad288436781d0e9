"""Ticket signing keys live in the database; tickets verify with only the JWKS."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete

from broker.service.tickets import RECHECK, KeyRing, RingState, jwks, verify
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
    before = database.transaction(lambda s: jwks(s, NOW))
    assert len(before["keys"]) == 2, "the current key and the next one, published ahead"
    later = NOW + timedelta(days=2)
    new = database.transaction(lambda s: ring.sign(s, {"sub": "b", "exp": exp}, later))
    doc = database.transaction(lambda s: jwks(s, later))
    assert len(doc["keys"]) == 3, "the retired key, the current one and a new next one"
    assert kid_of(new) in {k["kid"] for k in before["keys"]} - {kid_of(old)}, \
        "the key that signs after the rotation is the next key published before it"
    assert verify(old, doc)["sub"] == "a" and verify(new, doc)["sub"] == "b"
    assert verify_es256(old, doc)["sub"] == "a" and verify_es256(new, doc)["sub"] == "b"
    # once everything the old key could have signed has expired, it is no longer published
    gone = database.transaction(lambda s: jwks(s, later + timedelta(minutes=16)))
    assert kid_of(old) not in {k["kid"] for k in gone["keys"]} and len(gone["keys"]) == 2


def test_a_second_process_signs_with_the_same_key(database: Database) -> None:
    NOW = now()  # noqa: N806 (the suite can run for minutes: take the time per test)
    exp = int((NOW + timedelta(minutes=5)).timestamp())
    a = KeyRing(timedelta(days=30), timedelta(minutes=10))
    b = KeyRing(timedelta(days=30), timedelta(minutes=10))
    one = database.transaction(lambda s: a.sign(s, {"exp": exp}, NOW))
    two = database.transaction(lambda s: b.sign(s, {"exp": exp}, NOW))
    assert kid_of(one) == kid_of(two)
    assert len(database.transaction(lambda s: jwks(s, NOW))["keys"]) == 2  # current + next


def test_rotate_brings_the_next_key_in_and_every_process_follows(database: Database) -> None:
    """`broker keys rotate` in one process; a serving process signs with the new key once its
    cache is older than RECHECK, and with the old one (still accepted) until then."""
    NOW = now()  # noqa: N806 (the suite can run for minutes: take the time per test)
    exp = int((NOW + timedelta(minutes=5)).timestamp())
    serving = KeyRing(timedelta(days=30), timedelta(minutes=10))
    cli = KeyRing(timedelta(days=30), timedelta(minutes=10))
    first = database.transaction(lambda s: serving.sign(s, {"exp": exp}, NOW))
    ring = database.transaction(lambda s: (lambda r: (r.current.kid, r.next.kid))(
        cli.state(s, NOW)))
    assert ring[0] == kid_of(first)
    at = NOW + timedelta(seconds=1)
    state, was_published = database.transaction(lambda s: slots(cli.rotate(s, at)))
    assert was_published and state[0] == ring[1] and state[2] == ring[0]
    assert state[1] not in ring
    cached = database.transaction(lambda s: serving.sign(s, {"exp": exp}, at))
    assert kid_of(cached) == ring[0], "within RECHECK the process keeps its cached key"
    moved = database.transaction(lambda s: serving.sign(s, {"exp": exp}, NOW + RECHECK
                                                        + timedelta(seconds=1)))
    assert kid_of(moved) == ring[1]
    doc = database.transaction(lambda s: jwks(s, at))
    assert {kid_of(first), kid_of(moved), state[1]} == {k["kid"] for k in doc["keys"]}
    assert verify(first, doc) and verify(moved, doc)


def test_rotate_without_a_next_key_says_so(database: Database) -> None:
    """A database from before next keys has one live key: the first rotation still rotates,
    and says the new key was not published ahead."""
    from broker.store.models import SigningKey

    NOW = now()  # noqa: N806 (the suite can run for minutes: take the time per test)
    ring = KeyRing(timedelta(days=30), timedelta(minutes=10))
    old = database.transaction(lambda s: (lambda r: r.current.kid)(ring.state(s, NOW)))
    database.transaction(lambda s: s.execute(
        delete(SigningKey).where(SigningKey.kid != old)))
    kids, was_published = database.transaction(lambda s: slots(ring.rotate(s, NOW)))
    assert not was_published and kids[2] == old and kids[0] != old


def slots(rotated: tuple[RingState, bool]) -> tuple[tuple[str, str, str | None], bool]:
    """(current, next, previous) key ids of a rotation's result, and its second value."""
    state, flag = rotated
    return (state.current.kid, state.next.kid,
            state.previous.kid if state.previous else None), flag


def kid_of(token: str) -> str:
    head = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"]


def test_two_next_keys_made_at_once_leave_the_first(database: Database) -> None:
    """Two processes making the next key at the same moment: the earlier one stays next (the
    one a gateway export names), the other is dropped before it ever signs."""
    NOW = now()  # noqa: N806 (the suite can run for minutes: take the time per test)
    ring = KeyRing(timedelta(days=30), timedelta(minutes=10))
    first = database.transaction(lambda s: ring.state(s, NOW).next.kid)
    extra = database.transaction(lambda s: ring._create(
        s, NOW, NOW + timedelta(days=30, seconds=1)).kid)
    assert database.transaction(lambda s: ring.state(s, NOW).next.kid) == first
    published = {k["kid"] for k in database.transaction(lambda s: jwks(s, NOW))["keys"]}
    assert first in published and extra not in published and len(published) == 2


def test_the_scheduled_rotation_is_not_delayed_by_the_cache(database: Database) -> None:
    """A process's cached key never outlives the next key's start, even inside RECHECK."""
    NOW = now()  # noqa: N806 (the suite can run for minutes: take the time per test)
    exp = int((NOW + timedelta(minutes=5)).timestamp())
    ring = KeyRing(timedelta(seconds=10), timedelta(minutes=10))
    first = database.transaction(lambda s: ring.sign(s, {"exp": exp}, NOW))
    nxt = database.transaction(lambda s: ring.state(s, NOW).next.kid)
    assert timedelta(seconds=10) < RECHECK
    same = database.transaction(lambda s: ring.sign(s, {"exp": exp}, NOW + timedelta(seconds=9)))
    assert kid_of(same) == kid_of(first)
    moved = database.transaction(lambda s: ring.sign(s, {"exp": exp},
                                                     NOW + timedelta(seconds=10)))
    assert kid_of(moved) == nxt


def test_a_database_from_before_next_keys_moves_on(database: Database) -> None:
    """One live key and no next one (as every broker before next keys left it): a young key
    stays current and gets a next key a period ahead; an overdue one is replaced at once."""
    from broker.store.models import SigningKey

    NOW = now()  # noqa: N806 (the suite can run for minutes: take the time per test)
    ring = KeyRing(timedelta(days=30), timedelta(minutes=10))

    def legacy(made: datetime) -> str:
        def work(s: Any) -> str:
            s.execute(delete(SigningKey))
            kid = ring.state(s, made).current.kid
            s.execute(delete(SigningKey).where(SigningKey.kid != kid))
            return kid
        return database.transaction(work)

    young = legacy(NOW - timedelta(days=3))
    state = database.transaction(lambda s: (lambda r: (r.current.kid, r.next.created_at))(
        ring.state(s, NOW)))
    assert state == (young, NOW + timedelta(days=30))
    old = legacy(NOW - timedelta(days=40))
    after = database.transaction(lambda s: (lambda r: (r.current.kid, r.previous.kid if
                                                       r.previous else None))(
        ring.state(s, NOW)))
    assert after[0] != old and after[1] == old
