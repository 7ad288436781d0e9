"""PostgreSQL goes away mid-storm (a TCP proxy in front of it refuses and cuts connections for a
few seconds): calls answer 503 service_unavailable with Retry-After, never 500 and never hang;
/readyz is 503; everything recovers without a restart; afterwards no session is lost or
duplicated and no challenge is half-consumed. A statement failing mid-transaction leaves
nothing behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import create_engine, text

from tests.support.databases import postgres_schema_url
from tests.support.proxy import TcpProxy
from tests.support.storm import FAULT_ANSWERS, NO_RATE_LIMITS, StormLog, run_storm, summary
from tests.support.world import build_world

pytestmark = pytest.mark.postgres

OUTAGE_S = 3.0


@pytest.fixture
def pg_behind_proxy() -> Iterator[tuple[str, str, TcpProxy]]:
    """(direct URL, URL through the proxy, proxy) for a fresh migrated schema."""
    with postgres_schema_url() as url:
        from broker.store import migrate

        migrate.upgrade(url)
        parts = urlsplit(url)
        proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432)).start()
        via = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
        try:
            yield url, via, proxy
        finally:
            proxy.stop()


def test_a_database_outage_mid_storm_is_503_then_recovers_with_nothing_lost(
        broker_factory, tmp_path, pg_behind_proxy) -> None:  # type: ignore[no-untyped-def]
    direct, via, proxy = pg_behind_proxy
    bp = broker_factory(via, **NO_RATE_LIMITS)
    w = build_world(tmp_path / "world", bp)
    log = StormLog()
    readyz: list[int] = []

    def outage() -> None:
        time.sleep(2.0)
        proxy.stop()
        t_end = time.monotonic() + OUTAGE_S
        while time.monotonic() < t_end:
            try:
                readyz.append(bp.client().get("/readyz").status)
            except OSError:
                readyz.append(0)
            time.sleep(0.3)
        proxy.start()  # the same port again

    breaker = threading.Thread(target=outage)
    breaker.start()
    run_storm(lambda: bp.client(), w.codes["corp"], w.cards["bob"], "ws-bob", clients=3,
              seconds=2.0 + OUTAGE_S + 4.0, log=log)
    breaker.join(30)
    print("\n", summary(log), "readyz during outage:", readyz)

    assert log.unexpected(FAULT_ANSWERS) == [], "only success, 503 or a lost commit's refusal"
    assert log.crashes == []
    unavailable = [a for a in log.answers if a.status == 503]
    assert unavailable, "the outage should have been seen by clients"
    assert all(a.code == "service_unavailable" and a.retry_after == "2" for a in unavailable)
    assert max(a.seconds for a in log.answers) < 12, "no call may hang"
    assert 503 in readyz
    # recovery without restart: the storm went on after the outage
    assert bp.client().get("/readyz").status == 200
    assert log.logins and log.sessions
    assert bp.proc is not None and bp.proc.poll() is None

    engine = create_engine(direct)
    with engine.connect() as conn:
        used = conn.execute(text("SELECT count(*) FROM challenges WHERE purpose = 'pre_session' "
                                 "AND used_at IS NOT NULL")).scalar_one()
        tokens = conn.execute(text("SELECT count(*) FROM auth_tokens WHERE method = "
                                   "'smart_card'")).scalar_one()
        sessions = conn.execute(text("SELECT id FROM sessions")).scalars().all()
    engine.dispose()
    # a consumed challenge always has its token (consumed and issued in one transaction)
    assert used == tokens
    # a commit whose answer the cut lost counts in the database but not at the client: allow
    # one per 503'd call of that kind, and never a duplicate
    lost_logins = sum(1 for a in unavailable if a.call == "response")
    lost_connects = sum(1 for a in unavailable if a.call == "logon")  # opens the session
    assert len(log.logins) <= tokens <= len(log.logins) + lost_logins
    assert len(set(log.sessions)) == len(log.sessions)
    assert set(log.sessions) <= set(sessions)
    assert len(sessions) <= len(log.sessions) + lost_connects


def test_a_statement_failing_mid_transaction_leaves_nothing_behind(pg_behind_proxy) -> None:  # type: ignore[no-untyped-def]
    from broker.store.db import Database, DatabaseUnavailable

    direct, via, proxy = pg_behind_proxy
    db = Database(via)
    try:
        def write_then_fail(session):  # type: ignore[no-untyped-def]
            session.execute(text("INSERT INTO audit_events (at, kind, outcome, details) VALUES "
                                 "(now(), 'fault.test', 'change', '{}')"))
            session.execute(text("SELECT 1/0"))

        with pytest.raises(Exception, match="division by zero"):
            db.transaction(write_then_fail)

        def write_then_lose_the_database(session):  # type: ignore[no-untyped-def]
            session.execute(text("INSERT INTO audit_events (at, kind, outcome, details) VALUES "
                                 "(now(), 'fault.test', 'change', '{}')"))
            proxy.stop()
            session.execute(text("SELECT 1"))

        with pytest.raises(DatabaseUnavailable):
            db.transaction(write_then_lose_the_database)
        proxy.start()
    finally:
        db.dispose()
    engine = create_engine(direct)
    with engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM audit_events WHERE kind = "
                                 "'fault.test'")).scalar_one()
    engine.dispose()
    assert left == 0
