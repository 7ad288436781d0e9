"""The writes of a smart-card login (broker.store.logins) on SQLite and PostgreSQL.

PostgreSQL writes each set of rows in one statement (data-modifying CTEs), SQLite in several:
both must write the same rows, write nothing when the challenge is not spent, and leave the
counters alone when the caller refuses.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from broker import kinds
from broker.errors import BrokerError
from broker.service import audit
from broker.service.challenges import refuse_unspent
from broker.store.logins import record_challenge, spend_and_grant
from broker.store.models import AuditEvent, AuthToken, Challenge, Directory, RateCounter, User


def _world(database: Any) -> int:
    def work(s: Any) -> int:
        s.add(Directory(id="corp", name="Corp", region="us-gov-west-1"))
        s.flush()
        user = User(directory_id="corp", username="alice", upn="alice@corp.example")
        s.add(user)
        s.flush()
        return int(user.id)

    return int(database.transaction(work))


def _challenge(database: Any, cid: str, expires: datetime) -> None:
    database.transaction(lambda s: s.add(Challenge(
        id=cid, directory_id="corp", purpose=kinds.Purpose.PRE_SESSION, to_be_signed=b"tbs",
        expires_at=expires, created_at=expires - timedelta(minutes=5))))


def _rows(database: Any) -> tuple[int, int]:
    def work(s: Any) -> tuple[int, int]:
        return (s.scalar(select(func.count()).select_from(AuthToken)),
                s.scalar(select(func.count()).select_from(AuditEvent)))

    return tuple(database.read(work))  # type: ignore[return-value]


def _token(user_id: int, now: datetime, n: int, der: bytes | None) -> dict[str, Any]:
    return {"token_hash": f"{n:064x}", "user_id": user_id, "directory_id": "corp",
            "method": kinds.AuthMethod.SMART_CARD, "cert_fingerprint": "ab" * 32 if der else None,
            "cert_der": der, "client": {"platform": "windows"} if der else None,
            "expires_at": now + timedelta(hours=1), "revoked_at": None, "created_at": now}


def _event(now: datetime) -> dict[str, Any]:
    return audit.event("login.smart_card", "success", directory_id="corp", username="alice",
                       client_address="127.0.0.1", cert_fingerprint="ab" * 32,
                       challenge_id="c1", certificate={"subject": "CN=Alice", "upn": None},
                       revocation_soft_fail=None, verification={"path": ["CN=Alice"]})


def _grant(database: Any, cid: str, now: datetime, token: dict[str, Any],
           event: dict[str, Any], clear_key: str | None) -> bool:
    return bool(database.run(lambda c: spend_and_grant(c, cid, now, token, event, clear_key),
                             autocommit=True))


def test_a_grant_writes_its_rows_only_when_it_spends_the_challenge(database: Any) -> None:
    user_id = _world(database)
    now = datetime.now(UTC).replace(microsecond=0)
    _challenge(database, "c1", now + timedelta(minutes=5))
    key = "fail:cert:" + "ab" * 32
    for k in (key, "fail:cert:other"):
        database.run(lambda c, k=k: record_challenge(c, [k], now - timedelta(minutes=1), now,
                                                     *_challenge_rows(now, k)))
    event = _event(now)
    assert _grant(database, "c1", now, _token(user_id, now, 1, b"\x30\x03der"), event, key)
    assert _rows(database) == (1, 3)  # the token; the two challenges' events and the login's

    def stored(s: Any) -> tuple[Any, Any, Any, list[str]]:
        token = s.scalar(select(AuthToken))
        row = s.scalar(select(AuditEvent).where(AuditEvent.kind == "login.smart_card"))
        used = s.get(Challenge, "c1").used_at
        return token, row, used, list(s.scalars(select(RateCounter.key)))

    token, row, used, counters = database.read(stored)
    assert (token.user_id, token.method, token.cert_der, token.client, token.revoked_at) == (
        user_id, kinds.AuthMethod.SMART_CARD, b"\x30\x03der", {"platform": "windows"}, None)
    assert used == now
    assert key not in counters and "fail:cert:other" in counters, counters
    # The row is the one audit.insert writes for the same event (columns and details).
    database.run(lambda c: audit.insert_all(c, [event]))
    rows = database.read(lambda s: list(s.scalars(select(AuditEvent).where(
        AuditEvent.kind == "login.smart_card").order_by(AuditEvent.id))))
    columns = [c.name for c in AuditEvent.__table__.columns if c.name != "id"]
    assert [getattr(rows[0], c) for c in columns] == [getattr(rows[1], c) for c in columns]
    assert rows[0].details["verification"] == {"path": ["CN=Alice"]}

    # Spent: a second grant writes nothing and is refused as used.
    before = _rows(database)
    assert not _grant(database, "c1", now, _token(user_id, now, 2, None), _event(now), None)
    assert _rows(database) == before
    with pytest.raises(BrokerError) as refused:
        database.run(lambda c: refuse_unspent(c, "c1"))
    assert refused.value.code == "challenge_used"


def test_an_expired_or_unknown_challenge_grants_nothing(database: Any) -> None:
    user_id = _world(database)
    now = datetime.now(UTC).replace(microsecond=0)
    _challenge(database, "old", now - timedelta(seconds=1))
    key = "fail:cert:" + "cd" * 32
    database.run(lambda c: record_challenge(c, [key], now - timedelta(minutes=1), now,
                                            *_challenge_rows(now, key)))
    before = _rows(database)
    for cid, code in (("old", "challenge_expired"), ("none", "challenge_used")):
        assert not _grant(database, cid, now, _token(user_id, now, 3, None), _event(now), key)
        with pytest.raises(BrokerError) as refused:
            database.run(lambda c, cid=cid: refuse_unspent(c, cid))
        assert refused.value.code == code
    assert _rows(database) == before
    assert database.read(lambda s: s.get(RateCounter, key)) is not None


def _challenge_rows(now: datetime, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    cid = "x" + str(abs(hash((key, now))))[:20]
    challenge = {"id": cid, "directory_id": "corp", "purpose": kinds.Purpose.PRE_SESSION,
                 "detail": None, "to_be_signed": b"tbs", "expires_at": now + timedelta(minutes=5),
                 "used_at": None, "client_address": "127.0.0.1", "registration_code_id": None,
                 "cert_fingerprint": None, "workspace_id": None, "session_id": None,
                 "auth_token_id": None, "client": {"platform": "windows"}, "created_at": now}
    return challenge, audit.event("challenge.issue", "success", directory_id="corp",
                                  client_address="127.0.0.1", challenge_id=cid,
                                  purpose="pre_session")


def test_a_challenge_counts_its_keys_and_a_refusal_moves_nothing(database: Any) -> None:
    _world(database)
    now = datetime.now(UTC).replace(microsecond=0)
    keys = ["chal:addr:127.0.0.1", "chal:dir:corp"]
    cutoff = now - timedelta(minutes=1)
    first = database.run(lambda c: record_challenge(c, keys, cutoff, now,
                                                    *_challenge_rows(now, "1")))
    assert {k: n for k, (n, _) in first.items()} == {k: 1 for k in keys}
    second = database.run(lambda c: record_challenge(c, keys, cutoff, now,
                                                     *_challenge_rows(now, "2")))
    assert {k: n for k, (n, _) in second.items()} == {k: 2 for k in keys}

    class Refused(Exception):
        pass

    def refuse(c: Any) -> None:
        record_challenge(c, keys, cutoff, now, *_challenge_rows(now, "3"))
        raise Refused

    with pytest.raises(Refused):
        database.run(refuse)

    def state(s: Any) -> tuple[dict[str, int], int, int]:
        return ({r.key: r.count for r in s.scalars(select(RateCounter))},
                s.scalar(select(func.count()).select_from(Challenge)),
                s.scalar(select(func.count()).select_from(AuditEvent)))

    assert database.read(state) == ({k: 2 for k in keys}, 2, 2)
    # A window that started at the cutoff restarts.
    later = now + timedelta(minutes=1)
    third = database.run(lambda c: record_challenge(c, keys, now, later,
                                                    *_challenge_rows(later, "4")))
    assert {k: n for k, (n, _) in third.items()} == {k: 1 for k in keys}
