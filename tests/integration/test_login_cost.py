"""A smart-card login's database work does not grow with the directory (SQLite and PostgreSQL).

The use cases run in process against a real database; an SQLAlchemy event hook counts the SQL
statements of each call (as Synapse counts transactions per request). A directory of 2 users
and one of 3 000 must cost the same number of statements, and mapping the certificate to its
user must be an indexed lookup.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, select, update

from broker.admin.trust import trust_row
from broker.config import Settings
from broker.pki import issue
from broker.service import auth, in_session, login, registrations, sessions
from broker.service.context import BrokerContext
from broker.store.models import Directory, TrustCertificate, User, WorkSpace
from tests.support.softcard import WINDOWS, SoftCard

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def statements(ctx: BrokerContext) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(ctx.db.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(ctx.db.engine, "before_cursor_execute", count)


def seed(ctx: BrokerContext, extra_users: int) -> tuple[str, SoftCard]:
    root = issue.make_root("Cost Root")
    inter = issue.make_intermediate(root, "Cost Issuing")
    alice = issue.make_user_cert(inter, "Alice", upn="alice@corp.example")
    card = SoftCard(alice.key, alice.cert, [inter.cert])

    def work(s: Any) -> str:
        s.add(Directory(id="corp", name="Corp", region="us-gov-west-1", sc_pre_session=True,
                        sc_in_session=True, revocation_crl=False, certmap=["upn", "email"]))
        s.flush()
        for kind, issued in (("anchor", root), ("intermediate", inter)):
            s.add(trust_row("corp", issued.cert, kind))
        if extra_users:
            s.execute(insert(User), [{"directory_id": "corp", "username": f"u{i}",
                                      "upn": f"u{i}@corp.example", "email": f"u{i}@corp.example",
                                      "disabled": False} for i in range(extra_users)])
        user = User(directory_id="corp", username="alice", upn="alice@corp.example")
        s.add(user)
        s.flush()
        s.add(WorkSpace(id="ws-alice", directory_id="corp", user_id=user.id, protocol="WSP",
                        running_mode="ALWAYS_ON", state="AVAILABLE"))
        return registrations.issue_code(ctx, s, "corp", "test")

    return ctx.db.transaction(work), card


def one_login(ctx: BrokerContext, code: str, card: SoftCard) -> tuple[int, int]:
    client = registrations.ClientSpec(**WINDOWS)
    with statements(ctx) as issued:
        ch = login.issue_login_challenge(ctx, code, client, 1, "127.0.0.1")
    tbs = base64.b64decode(ch["to_be_signed"])
    with statements(ctx) as answered:
        out = login.respond_to_challenge(ctx, ch["challenge_id"], card.cert_b64(),
                                         card.chain_b64(), base64.b64encode(card.sign(tbs))
                                         .decode(), card.algorithm, "127.0.0.1")
    assert out["user"]["username"] == "alice"
    return len(issued), len(answered)


@pytest.mark.parametrize("extra_users", [0, 3000])
def test_login_statements_do_not_grow_with_the_directory(database: Any,
                                                         extra_users: int) -> None:
    ctx = BrokerContext(Settings(base_dir=REPO), database=database)
    code, card = seed(ctx, extra_users)
    one_login(ctx, code, card)  # warm the per-process caches (signing key, trust store)
    issued, answered = one_login(ctx, code, card)
    # Fixed budgets: a call that starts loading collections blows through them. Counted with
    # BEGIN where the driver sends it (SQLite; psycopg begins implicitly). The challenge: a
    # read (code + directory + address lock), then the three rate counters, the challenge and
    # its audit event, one statement on PostgreSQL (three in one transaction on SQLite, the
    # read in it too); the response: a read (challenge, directory version, locks), the user
    # with WorkSpaces, then consume, token and audit event, one statement on PostgreSQL
    # (three in SQLite's transaction, with the user read).
    sqlite = database.dialect == "sqlite"
    assert issued <= (5 if sqlite else 2), issued
    assert answered <= (7 if sqlite else 3), answered


def test_a_login_is_seven_round_trips_on_postgresql(database: Any) -> None:
    """Counted with psycopg's implicit BEGIN and its COMMIT: the challenge is its read, then
    BEGIN, one statement, COMMIT (a refused counter rolls back); the response three statements
    in autocommit (its read, the user, the grant: one statement is atomic by itself). SQLite,
    in process, runs three transactions: the challenge, the response's read, its write."""
    ctx = BrokerContext(Settings(base_dir=REPO), database=database)
    code, card = seed(ctx, 0)
    one_login(ctx, code, card)
    trips: list[str] = []

    def statement(conn: Any, cursor: Any, text: str, *args: Any) -> None:
        trips.append(text.split()[0])

    def begin(conn: Any) -> None:
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            trips.extend(["BEGIN", "COMMIT"])  # each transaction here runs a statement

    event.listen(ctx.db.engine, "before_cursor_execute", statement)
    event.listen(ctx.db.engine, "begin", begin)
    try:
        one_login(ctx, code, card)
    finally:
        event.remove(ctx.db.engine, "before_cursor_execute", statement)
        event.remove(ctx.db.engine, "begin", begin)
    if database.dialect == "postgresql":
        assert len(trips) == 7, trips
    else:
        assert trips.count("COMMIT") == 3, trips


class SkewedClock:
    """The wall clock plus an offset a test moves (a WorkSpace start completes at once)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def session_calls(ctx: BrokerContext, clock: SkewedClock, code: str,
                  card: SoftCard) -> dict[str, int]:
    """Statements of connect (AVAILABLE: a logon challenge, the PIN again), the logon that opens
    its session, heartbeat, connect (STOPPED → STARTING with a logon challenge) and the logon
    that opens the session once the start is due."""
    client = registrations.ClientSpec(**WINDOWS)
    ch = login.issue_login_challenge(ctx, code, client, 1, "127.0.0.1")
    tbs = base64.b64decode(ch["to_be_signed"])
    token = login.respond_to_challenge(ctx, ch["challenge_id"], card.cert_b64(),
                                       card.chain_b64(), base64.b64encode(card.sign(tbs))
                                       .decode(), card.algorithm, "127.0.0.1")["auth_token"]
    principal = auth.client_principal(ctx, token)
    counts: dict[str, int] = {}
    with statements(ctx) as seen:
        started = sessions.connect(ctx, principal, "ws-alice", "127.0.0.1")
        body = started.body
    assert isinstance(started, sessions.Starting) and body["state"] == "AVAILABLE", body
    counts["connect"] = len(seen)
    logon = body["logon_challenge"]
    signature = base64.b64encode(card.sign(base64.b64decode(logon["to_be_signed"]))).decode()
    with statements(ctx) as seen:
        body = sessions.logon(ctx, principal, "ws-alice", logon["challenge_id"], signature,
                              card.algorithm, "127.0.0.1")
    counts["logon_available"] = len(seen)
    with statements(ctx) as seen:
        assert sessions.heartbeat(ctx, principal, body["session"]["id"], True) == {
            "action": "none"}
    counts["heartbeat"] = len(seen)
    ctx.db.transaction(lambda s: s.execute(update(WorkSpace).where(
        WorkSpace.id == "ws-alice-stopped").values(state="STOPPED", transition_due_at=None)))
    with statements(ctx) as seen:
        started = sessions.connect(ctx, principal, "ws-alice-stopped", "127.0.0.1")
        body = started.body
    assert isinstance(started, sessions.Starting), started
    counts["connect_start"] = len(seen)
    clock.offset += timedelta(seconds=ctx.settings.workspaces.start_delay_s + 1)
    logon = body["logon_challenge"]
    signature = base64.b64encode(card.sign(base64.b64decode(logon["to_be_signed"]))).decode()
    with statements(ctx) as seen:
        out = sessions.logon(ctx, principal, "ws-alice-stopped", logon["challenge_id"],
                             signature, card.algorithm, "127.0.0.1")
    assert out["session"]["ticket"]
    counts["logon"] = len(seen)
    return counts


def test_session_calls_cost_a_fixed_number_of_statements(database: Any) -> None:
    clock = SkewedClock()
    ctx = BrokerContext(Settings(base_dir=REPO), database=database, clock=clock)
    code, card = seed(ctx, 0)

    def stopped_workspace(s: Any) -> None:
        alice = s.scalar(select(User).where(User.username == "alice"))
        s.add(WorkSpace(id="ws-alice-stopped", directory_id="corp", user_id=alice.id,
                        protocol="WSP", running_mode="AUTO_STOP", state="STOPPED"))

    ctx.db.transaction(stopped_workspace)
    session_calls(ctx, clock, code, card)  # warm the per-process caches (signing key, trust)
    counts = session_calls(ctx, clock, code, card)
    # Fixed budgets, counted with BEGIN where the driver sends it (SQLite; psycopg begins
    # implicitly): a call that starts loading collections blows through them. Each call is one
    # write transaction, the logon a read and a write:
    # connect (AVAILABLE): the throttle counters, WorkSpace with directory and user, logon
    # challenge;
    # logon: WorkSpace with challenge | WorkSpace, consume, takeover, session, WorkSpace
    # activity, audit (one INSERT for both events) — the same whether the WorkSpace was
    # AVAILABLE or has just started;
    # heartbeat: session with removal action, session, WorkSpace activity;
    # connect_start: the throttle counters, WorkSpace with directory and user, logon
    # challenge, WorkSpace, audit.
    budget = {"connect": 3, "logon_available": 7, "heartbeat": 3, "connect_start": 5,
              "logon": 7}
    transactions = {"connect": 1, "logon_available": 2, "heartbeat": 1, "connect_start": 1,
                    "logon": 2}
    sqlite = database.dialect == "sqlite"
    over = {call: n for call, n in counts.items()
            if n > budget[call] + sqlite * transactions[call]}
    assert not over, counts


def test_mapping_does_not_read_the_directorys_users(database: Any) -> None:
    ctx = BrokerContext(Settings(base_dir=REPO), database=database)
    code, card = seed(ctx, 50)
    one_login(ctx, code, card)
    client = registrations.ClientSpec(**WINDOWS)
    ch = login.issue_login_challenge(ctx, code, client, 1, "127.0.0.1")
    tbs = base64.b64decode(ch["to_be_signed"])
    with statements(ctx) as seen:
        login.respond_to_challenge(ctx, ch["challenge_id"], card.cert_b64(), card.chain_b64(),
                                   base64.b64encode(card.sign(tbs)).decode(), card.algorithm,
                                   "127.0.0.1")
    user_reads = [s for s in seen if "FROM users" in s]
    assert user_reads, "the user is looked up"
    assert all("lower(users.upn)" in s or "lower(users.email)" in s or "users.subject" in s
               or "lower(users.cert_fingerprint)" in s or "users.id =" in s
               for s in user_reads), user_reads


def test_a_trust_change_reaches_every_process_on_its_next_request(database: Any) -> None:
    """Two contexts stand for two broker processes: B removes the trust anchor, and A — whose
    cache holds the old trust — refuses the very next login (the directory version moved)."""
    from sqlalchemy import select

    from broker.errors import BrokerError

    process_a = BrokerContext(Settings(base_dir=REPO), database=database)
    process_b = BrokerContext(Settings(base_dir=REPO), database=database)
    code, card = seed(process_a, 0)
    one_login(process_a, code, card)  # A's cache now holds corp's trust
    version = database.read(lambda s: s.get(Directory, "corp").version)

    def remove_anchor(s: Any) -> None:
        s.delete(s.scalar(select(TrustCertificate).where(TrustCertificate.kind == "anchor")))

    process_b.db.transaction(remove_anchor)
    assert database.read(lambda s: s.get(Directory, "corp").version) == version + 1
    with pytest.raises(BrokerError) as err:
        one_login(process_a, code, card)
    assert err.value.code == "certificate_untrusted"


def test_a_login_forgets_the_certificates_earlier_failures(database: Any) -> None:
    """The response's write transaction clears ``fail:cert:<sha256>`` when the read saw it."""
    from broker.service import limits
    from broker.service.wire import cert_fingerprint
    from broker.store.models import RateCounter

    ctx = BrokerContext(Settings(base_dir=REPO), database=database)
    code, card = seed(ctx, 0)
    key = f"fail:cert:{cert_fingerprint(base64.b64decode(card.cert_b64()))}"
    ctx.db.run(lambda conn: limits.record_failure(conn, key, 5, 300, ctx.now()))
    assert database.read(lambda s: s.get(RateCounter, key)) is not None
    one_login(ctx, code, card)
    assert database.read(lambda s: s.get(RateCounter, key)) is None


def test_a_warm_login_compiles_no_statement(database: Any) -> None:
    """Every statement of a repeat login comes from SQLAlchemy's compiled cache: a statement
    SQLAlchemy cannot cache (a multi-row VALUES, say) is compiled again on every call, which
    cost about a millisecond per challenge before the rate-counter upsert was rewritten."""
    from sqlalchemy.engine.default import CACHE_HIT

    ctx = BrokerContext(Settings(base_dir=REPO), database=database)
    code, card = seed(ctx, 0)
    one_login(ctx, code, card)
    compiled: list[tuple[str, str]] = []

    def note(conn: Any, cursor: Any, statement: str, params: Any, context: Any,
             many: bool) -> None:
        if context.compiled is not None and context.cache_hit is not CACHE_HIT:
            compiled.append((str(context.cache_hit), statement.split(" (")[0][:80]))

    event.listen(ctx.db.engine, "before_cursor_execute", note)
    try:
        one_login(ctx, code, card)
    finally:
        event.remove(ctx.db.engine, "before_cursor_execute", note)
    assert compiled == [], compiled


@pytest.mark.parametrize("rule", ["upn", "email", "subject", "fingerprint"])
def test_every_certmap_rule_uses_its_index_after_analyze(database: Any, rule: str) -> None:
    """With fresh statistics of a directory whose users have no subject or fingerprint yet
    (those columns all NULL), each rule's lookup still goes through its index. SQLite's planner
    took such a column for a thousand rows per value and scanned every user instead."""
    from broker.store.statements import USER_WITH_WORKSPACES

    ctx = BrokerContext(Settings(base_dir=REPO), database=database)
    seed(ctx, 3000)
    sqlite = database.dialect == "sqlite"
    with database.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
        compiled = USER_WITH_WORKSPACES[rule].compile(dialect=database.engine.dialect)
        state = compiled.construct_expanded_state(
            {"directory_id": "corp", "value": "someone", "values": ["someone"]})
        params: Any = state.parameters
        if state.positiontup is not None:
            params = tuple(params[k] for k in state.positiontup)
        explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
        plan = [str(row[-1]) for row in conn.exec_driver_sql(explain + state.statement, params)]
    index = f"ix_users_certmap_{rule}"
    assert any(index in line for line in plan), plan
    assert not any(line.strip() in ("SCAN users", "SCAN TABLE users")
                   or "Seq Scan on users" in line for line in plan), plan


def client_calls(ctx: BrokerContext, code: str, card: SoftCard) -> dict[str, int]:
    """Statements of every other client call: registration, password login (granted and
    refused: the refusal's own audit-and-count transaction included), the Bearer token,
    in-session challenge and response, ending a session, and each sweep."""
    from broker.errors import BrokerError
    from broker.service import sweeps

    client = registrations.ClientSpec(**WINDOWS)
    counts: dict[str, int] = {}
    with statements(ctx) as seen:
        registrations.register(ctx, code, client, "127.0.0.1")
    counts["registration"] = len(seen)
    with statements(ctx) as seen:
        login.password_login(ctx, code, "bob", "bob's password", "127.0.0.1", client)
    counts["password_login"] = len(seen)
    with statements(ctx) as seen, pytest.raises(BrokerError) as refused:
        login.password_login(ctx, code, "bob", "wrong", "127.0.0.9", client)
    assert refused.value.code == "invalid_credentials"
    counts["password_refused"] = len(seen)
    ch = login.issue_login_challenge(ctx, code, client, 1, "127.0.0.1")
    tbs = base64.b64decode(ch["to_be_signed"])
    token = login.respond_to_challenge(ctx, ch["challenge_id"], card.cert_b64(),
                                       card.chain_b64(), base64.b64encode(card.sign(tbs))
                                       .decode(), card.algorithm, "127.0.0.1")["auth_token"]
    with statements(ctx) as seen:
        principal = auth.client_principal(ctx, token)
    counts["bearer"] = len(seen)
    started = sessions.connect(ctx, principal, "ws-alice", "127.0.0.1")
    logon = started.body["logon_challenge"]
    sid = sessions.logon(ctx, principal, "ws-alice", logon["challenge_id"], base64.b64encode(
        card.sign(base64.b64decode(logon["to_be_signed"]))).decode(), card.algorithm,
        "127.0.0.1")["session"]["id"]
    with statements(ctx) as seen:
        isc = in_session.in_session_challenge(ctx, principal, sid, "browser", "127.0.0.1")
    counts["in_session_challenge"] = len(seen)
    signature = base64.b64encode(card.sign(base64.b64decode(isc["to_be_signed"]))).decode()
    with statements(ctx) as seen:
        out = in_session.in_session_response(ctx, principal, sid, isc["challenge_id"], signature,
                                           card.algorithm, None, [], "127.0.0.1")
    assert out["assertion"]
    counts["in_session_response"] = len(seen)
    with statements(ctx) as seen:
        sessions.end_session(ctx, principal, sid)
    counts["end"] = len(seen)
    for sweep in sweeps.sweepers(ctx):
        with statements(ctx) as seen:
            sweep()
        counts[f"sweep:{sweep.__name__}"] = len(seen)
    return counts


def test_every_client_call_costs_a_fixed_number_of_statements(database: Any) -> None:
    from broker.service.passwords import hash_password

    ctx = BrokerContext(Settings(base_dir=REPO), database=database)
    code, card = seed(ctx, 0)

    def password_user(s: Any) -> None:
        s.get(Directory, "corp").password_login = True
        s.add(User(directory_id="corp", username="bob", password_hash=hash_password(
            "bob's password")))

    ctx.db.transaction(password_user)
    client_calls(ctx, code, card)  # warm the per-process caches (signing key, trust)
    counts = client_calls(ctx, code, card)
    # Fixed budgets on Core, counted with BEGIN where the driver sends it (SQLite; psycopg
    # begins implicitly):
    # registration: code with directory, audit;
    # password login: code with directory and address lock, the other locks, user with
    # WorkSpaces, token, pair counter cleared, address marked, audit;
    # refused password: the same three reads, then, in the refusal's own transaction, the
    # audit event and one upsert per counter (address, user from this address, user); a
    # counter reaching its limit adds its lock or hold;
    # bearer: the token by hash;
    # in-session challenge: throttle counters, session with directory and WorkSpace,
    # challenge, audit;
    # in-session response: session with directory and challenge | session, user by the
    # certmap rule, consume, audit;
    # end: session, session update, audit;
    # sweeps: count + delete challenges; delete tokens; due + idle WorkSpaces; stale sessions
    # (UPDATE … RETURNING).
    budget = {"registration": 2, "password_login": 7, "password_refused": 7, "bearer": 1,
              "in_session_challenge": 4, "in_session_response": 5, "end": 3,
              "sweep:expire_challenges": 2, "sweep:expire_auth_tokens": 1,
              "sweep:sweep_workspaces": 2, "sweep:sweep_sessions": 1}
    transactions = {"registration": 1, "password_login": 1, "password_refused": 2,
                    "bearer": 1, "in_session_challenge": 1, "in_session_response": 2,
                    "end": 1, "sweep:expire_challenges": 1, "sweep:expire_auth_tokens": 1,
                    "sweep:sweep_workspaces": 1, "sweep:sweep_sessions": 1}
    assert set(counts) == set(budget), counts
    sqlite = database.dialect == "sqlite"
    over = {call: n for call, n in counts.items()
            if n > budget[call] + sqlite * transactions[call]}
    assert not over, counts
