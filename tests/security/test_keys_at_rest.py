"""Keys at rest (issue 30, item 4): the ticket-signing keys are sealed in the database under a
key kept outside it, every file the broker makes is its own user's only whatever the umask,
and ``broker doctor`` warns about loose modes.

The reproduction: ``database.url`` names a SQLite file outside the state folder (documented),
``broker migrate`` used to create it 0644, and the ES256 private keys in it were plain PEM — any
local user could forge session tickets.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from broker.service.tickets import KeyRing, jwks, verify
from broker.store import migrate
from broker.store.db import Database
from broker.store.models import SigningKey
from tests.support.server import BrokerProcess, free_port
from tests.support.softcard import SoftClient
from tests.support.world import build_world


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_signing_keys_are_sealed_and_every_file_is_private(tmp_path: Path) -> None:
    outside = tmp_path / "data"  # the database outside the state folder
    outside.mkdir()
    bp = BrokerProcess(tmp_path / "broker", f"sqlite:///{outside / 'broker.db'}", free_port(),
                       free_port())
    bp.base.mkdir()
    bp.write_config()
    with umask(0o022):  # a permissive umask, as on most systems
        bp.run_cli("migrate")
        bp.start()
    try:
        state = bp.base / "var"
        db = outside / "broker.db"
        key_file = state / "keys" / "signing-keys.key"
        assert mode(db) == 0o600, "the database must not be readable by other local users"
        assert mode(state) == 0o700 and mode(state / "keys") == 0o700
        assert mode(key_file) == 0o600 and len(base64.b64decode(key_file.read_bytes())) == 32
        assert mode(state / "dev-tls") == 0o700
        assert mode(state / "dev-tls" / "dev-key.pem") == 0o600
        # a login makes a ticket, and with it the first signing key
        w = build_world(tmp_path / "w", bp)
        client = SoftClient(bp.client(), w.codes["corp"])
        r = client.login(w.cards["bob"])
        assert r.status == 200, r.body
        s = client.open_session(r.body["auth_token"], "ws-bob", w.cards["bob"])
        assert s.status == 201, s.body
        ticket = s.body["session"]["ticket"]
        for extra in ("broker.db-wal", "broker.db-shm", "broker.db-journal"):
            if (outside / extra).exists():
                assert mode(outside / extra) == 0o600, extra
        engine = create_engine(bp.db_url)
        with engine.connect() as conn:
            stored = [bytes(v) for v in conn.scalars(select(SigningKey.private_pem))]
        engine.dispose()
        assert stored and all(v.startswith(b"sbk1:") for v in stored)
        assert not any(b"PRIVATE KEY" in v for v in stored)
        raw = db.read_bytes() + b"".join(p.read_bytes() for p in outside.iterdir())
        assert b"PRIVATE KEY" not in raw, "no private key in plain anywhere in the database"
        jwks_doc = bp.client().get("/v1/jwks.json").body
        assert verify(ticket, jwks_doc)["sub"] == "bob"
        # doctor: all private, then a warning per loosened file
        ok = bp.run_cli("doctor", "--json", check=False)
        checks = json.loads(ok.stdout)["checks"]
        assert [c["status"] for c in checks if c["name"] == "permissions"] == ["ok"], checks
        db.chmod(0o644)
        key_file.chmod(0o640)
        loose = bp.run_cli("doctor", "--json", check=False)
        warned = {c["subject"]: c for c in json.loads(loose.stdout)["checks"]
                  if c["name"] == "permissions"}
        assert set(warned) == {str(db), str(key_file)}, warned
        assert all(c["status"] == "warn" for c in warned.values())
        assert "chmod 600" in warned[str(db)]["detail"]
    finally:
        bp.stop()


def test_a_key_sealed_elsewhere_is_refused_with_a_clear_line(tmp_path: Path) -> None:
    """Two nodes need the same key file: a node with another key says so at signing time."""
    from broker.keys_at_rest import KeyFileError, seal, unseal

    pem = b"-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n"
    sealed = seal(b"k" * 32, "kid-1", pem)
    assert unseal(b"k" * 32, "kid-1", sealed) == pem
    with pytest.raises(KeyFileError, match="every node needs the same key file"):
        unseal(b"x" * 32, "kid-1", sealed)
    with pytest.raises(KeyFileError):  # the kid is bound: a row's key cannot be moved
        unseal(b"k" * 32, "kid-2", sealed)


def _plain_key_at_0007(url: str) -> tuple[str, str, dict[str, Any]]:
    """A signing key written as the broker wrote it before revision 0008 (plain PEM), and a
    ticket it signed."""
    migrate.upgrade(url, "0007")
    db = Database(url)
    now = datetime.now(UTC).replace(microsecond=0)
    ring = KeyRing(timedelta(days=30), timedelta(minutes=10))  # no sealing: the old way
    claims = {"sub": "alice", "exp": int((now + timedelta(minutes=5)).timestamp())}
    token = db.transaction(lambda s: ring.sign(s, claims, now))
    doc = db.transaction(lambda s: jwks(s, now))
    pem = db.transaction(lambda s: bytes(s.scalar(select(SigningKey.private_pem))))
    db.engine.dispose()
    assert pem.startswith(b"-----BEGIN")
    return token, pem.decode(), doc


def test_the_migration_seals_existing_keys_and_the_downgrade_opens_them(
        db_url: str) -> None:
    token, pem, doc = _plain_key_at_0007(db_url)
    with pytest.raises(Exception, match="no sealing key"):
        migrate.upgrade(db_url)  # never leaves plain keys behind the operator's back
    key = os.urandom(32)
    migrate.upgrade(db_url, sealing_key=key)
    db = Database(db_url)
    try:
        stored = db.transaction(lambda s: bytes(s.scalar(select(SigningKey.private_pem))))
        assert stored.startswith(b"sbk1:") and b"PRIVATE KEY" not in stored
        # the broker keeps signing with the same key: old tickets and new ones verify
        now = datetime.now(UTC).replace(microsecond=0)
        ring = KeyRing(timedelta(days=30), timedelta(minutes=10), sealing_key=lambda: key)
        new = db.transaction(lambda s: ring.sign(
            s, {"sub": "bob", "exp": int((now + timedelta(minutes=5)).timestamp())}, now))
        assert db.transaction(lambda s: jwks(s, now)) == doc, "the same key, not a new one"
        assert verify(token, doc)["sub"] == "alice" and verify(new, doc)["sub"] == "bob"
    finally:
        db.engine.dispose()
    migrate.downgrade(db_url, "0007", sealing_key=key)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert bytes(conn.scalar(select(SigningKey.private_pem))).decode() == pem
    engine.dispose()
