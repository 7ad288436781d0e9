"""Smart-card and password login over real TLS against `broker serve` (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import threading
import time

import pytest
from sqlalchemy import create_engine, func, select

from broker.store.models import AuditEvent, AuthToken, Challenge
from tests.support.softcard import SoftClient


def counts(url: str) -> tuple[int, int]:
    """(auth tokens, used challenges) in the database."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tokens = conn.execute(select(func.count()).select_from(AuthToken)).scalar_one()
            used = conn.execute(select(func.count()).select_from(Challenge).where(
                Challenge.used_at.is_not(None))).scalar_one()
    finally:
        engine.dispose()
    return tokens, used


def refused(broker, world, card_name: str, code: str, directory: str = "corp") -> None:  # type: ignore[no-untyped-def]
    client = SoftClient(broker.client(), world.codes[directory])
    before = counts(broker.db_url)
    r = client.login(world.cards[card_name])
    assert r.status == 401 or r.status == 403, r.body
    assert r.code == code, r.body
    assert counts(broker.db_url) == before, "a refusal must not write tokens or use challenges"


def test_valid_card_logs_in_and_lists_workspaces(broker, world) -> None:  # type: ignore[no-untyped-def]
    r = SoftClient(broker.client(), world.codes["corp"]).login(world.cards["alice"])
    assert r.status == 200, r.body
    assert r.body["user"]["username"] == "alice"
    assert r.body["auth_token"].startswith("sbt_")
    by_id = {w["id"]: w for w in r.body["workspaces"]}
    assert by_id["ws-alice"] == {"id": "ws-alice", "name": "ws-alice", "protocol": "WSP",
                                 "running_mode": "AUTO_STOP", "state": "STOPPED"}
    assert by_id["ws-alice-pcoip"]["protocol"] == "PCoIP"


def test_rsa_card_logs_in(broker, world) -> None:  # type: ignore[no-untyped-def]
    r = SoftClient(broker.client(), world.codes["corp"]).login(world.cards["alice_rsa"])
    assert r.status == 200, r.body


def test_challenge_describes_what_to_sign(broker, world) -> None:  # type: ignore[no-untyped-def]
    r = SoftClient(broker.client(), world.codes["corp"]).challenge()
    assert r.status == 201
    tbs = base64.b64decode(r.body["to_be_signed"])
    assert tbs.startswith(b"smartcard-broker/challenge/v1\n")
    assert r.body["challenge_id"].encode() in tbs and b'"directory":"corp"' in tbs
    assert "CN=Corp Root CA,O=Example Agency,C=US" in r.body["accepted_issuers"]
    assert "ecdsa-sha256" in r.body["signature_algorithms"]


@pytest.mark.parametrize("card,code", [
    ("expired", "certificate_expired"),
    ("olga_in_corp", "certificate_untrusted"),
    ("revoked", "certificate_revoked"),
    ("wrong_eku", "certificate_not_for_client_auth"),
    ("stranger", "user_not_found"),
    ("carol", "smart_card_requires_wsp"),
    ("ee_name_constraints", "certificate_malformed"),
    ("bad_dns_san", "certificate_malformed"),
])
def test_bad_certificates_are_refused_with_their_code(broker, world, card, code) -> None:  # type: ignore[no-untyped-def]
    refused(broker, world, card, code)


def test_signature_by_another_key_is_refused(broker, world) -> None:  # type: ignore[no-untyped-def]
    client = SoftClient(broker.client(), world.codes["corp"])
    ch = client.challenge().body
    forged = world.cards["bob"].sign(base64.b64decode(ch["to_be_signed"]))
    r = client.respond(ch, world.cards["alice"], signature=forged)
    assert r.status == 401 and r.code == "signature_invalid"


def test_replayed_response_is_refused(broker, world) -> None:  # type: ignore[no-untyped-def]
    client = SoftClient(broker.client(), world.codes["corp"])
    ch = client.challenge().body
    assert client.respond(ch, world.cards["alice"]).status == 200
    again = client.respond(ch, world.cards["alice"])
    assert again.status == 401 and again.code == "challenge_used"


def test_unknown_challenge_is_refused(broker, world) -> None:  # type: ignore[no-untyped-def]
    client = SoftClient(broker.client(), world.codes["corp"])
    ch = client.challenge().body
    ch["challenge_id"] = "nope"
    assert client.respond(ch, world.cards["alice"]).code == "challenge_unknown"


def test_challenge_from_another_directory_is_refused(broker, world) -> None:  # type: ignore[no-untyped-def]
    """Trust and users are per directory: a certificate that the "other" directory trusts and
    whose UPN is corp's alice maps to nobody there, and corp's alice is not trusted there."""
    other = SoftClient(broker.client(), world.codes["other"])
    assert other.login(world.cards["olga"]).status == 200, "positive control"
    r = other.login(world.cards["olga_in_corp"])
    assert r.status == 401 and r.code == "user_not_found"
    r = other.login(world.cards["alice"])
    assert r.status == 401 and r.code == "certificate_untrusted"


def test_response_after_expiry_is_refused(broker_factory, migrated_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.world import build_world

    bp = broker_factory(migrated_url, BROKER_LOGIN_CHALLENGE_TTL_S="1")
    w = build_world(tmp_path / "w", bp)
    client = SoftClient(bp.client(), w.codes["corp"])
    ch = client.challenge().body
    time.sleep(2.1)
    r = client.respond(ch, w.cards["alice"])
    assert r.status == 401 and r.code == "challenge_expired"


def test_policy_refusal_lists_every_reason(broker, world) -> None:  # type: ignore[no-untyped-def]
    client = SoftClient(broker.client(), world.codes["corp"],
                        {"platform": "macos", "arch": "x86", "version": "2.0"})
    r = client.challenge(card_count=2)
    assert r.status == 403 and r.code == "smart_card_not_allowed"
    assert set(r.body["error"]["details"]["reasons"]) >= {
        "client_platform_unsupported", "client_arch_unsupported", "client_version_unsupported",
        "multiple_cards"}


def test_no_card_is_refused(broker, world) -> None:  # type: ignore[no-untyped-def]
    r = SoftClient(broker.client(), world.codes["corp"]).challenge(card_count=0)
    assert r.code == "smart_card_not_allowed" and "no_card" in r.body["error"]["details"][
        "reasons"]


def test_us_east_1_refuses_pre_session_challenges(broker, world) -> None:  # type: ignore[no-untyped-def]
    r = SoftClient(broker.client(), world.codes["east"]).challenge()
    assert r.code == "smart_card_not_allowed"
    assert r.body["error"]["details"]["reasons"] == ["region_pre_session_unavailable"]


def test_challenges_are_rate_limited_per_code(broker_factory, migrated_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.world import build_world

    bp = broker_factory(migrated_url, BROKER_LOGIN_CHALLENGES_PER_CODE_PER_MINUTE="3")
    w = build_world(tmp_path / "w", bp)
    client = SoftClient(bp.client(), w.codes["corp"])
    assert [client.challenge().status for _ in range(3)] == [201, 201, 201]
    r = client.challenge()
    assert r.status == 429 and r.code == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 61


def test_key_holders_failures_lock_the_cert(broker_factory, migrated_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.world import build_world

    bp = broker_factory(migrated_url, BROKER_LOGIN_MAX_FAILURES="2")
    w = build_world(tmp_path / "w", bp)
    client = SoftClient(bp.client(), w.codes["corp"])
    # The stranger's signatures verify (the key is proven) but no user matches: evidence.
    assert [client.login(w.cards["stranger"]).code for _ in range(2)] == ["user_not_found"] * 2
    r = client.login(w.cards["stranger"])
    assert r.status == 429 and r.code == "locked_out"
    assert 1 <= int(r.headers["retry-after"]) <= 301
    assert client.login(w.cards["bob"]).status == 200, "other certificates are not locked"


def test_bad_signatures_never_lock_the_owner(broker_factory, migrated_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.world import build_world

    bp = broker_factory(migrated_url, BROKER_LOGIN_MAX_FAILURES="2")
    w = build_world(tmp_path / "w", bp)
    client = SoftClient(bp.client(), w.codes["corp"])
    for _ in range(4):  # anyone may hold alice's public certificate
        ch = client.challenge().body
        bad = client.respond(ch, w.cards["alice"], signature=b"\x30\x00")
        assert bad.code == "signature_invalid"
    assert client.login(w.cards["alice"]).status == 200


def test_audit_records_decisions_without_secrets(broker, world) -> None:  # type: ignore[no-untyped-def]
    client = SoftClient(broker.client(), world.codes["corp"])
    assert client.login(world.cards["alice"]).status == 200
    client.login(world.cards["expired"])
    engine = create_engine(broker.db_url)
    with engine.connect() as conn:
        rows = conn.execute(select(AuditEvent.kind, AuditEvent.outcome, AuditEvent.reason,
                                   AuditEvent.cert_fingerprint, AuditEvent.client_address,
                                   AuditEvent.details)).all()
    engine.dispose()
    kinds = {(r.kind, r.outcome, r.reason) for r in rows}
    assert ("login.smart_card", "success", None) in kinds
    assert ("login.smart_card", "refused", "certificate_expired") in kinds
    assert ("challenge.issue", "success", None) in kinds
    login = next(r for r in rows if r.kind == "login.smart_card" and r.outcome == "success")
    evidence = login.details["verification"]  # what the decision rested on (issue 13)
    assert evidence["chain"][-1] == "CN=Corp Root CA,O=Example Agency,C=US"
    checked = evidence["revocation"]["checked"]
    assert any(c["method"] == "crl" and c["crl_issuer"].startswith("CN=Corp Issuing CA")
               and c["crl_number"] == 1 and c["next_update"] for c in checked)
    ok = [r for r in rows if r.kind == "login.smart_card" and r.outcome == "success"][0]
    assert ok.cert_fingerprint and len(ok.cert_fingerprint) == 64
    assert ok.client_address == "127.0.0.1"
    # a refusal names who presented what: address, fingerprint, subject and UPN
    refused = next(r for r in rows if r.reason == "certificate_expired")
    assert refused.client_address == "127.0.0.1" and len(refused.cert_fingerprint) == 64
    assert refused.details["certificate"]["subject"].startswith("CN=Alice old")
    assert refused.details["certificate"]["upn"] == "alice@corp.example"
    text = repr(rows)
    assert "sbt_" not in text and "to_be_signed" not in text


# ------------------------------------------------------------------ password login

def test_password_login_works_where_enabled(broker, world) -> None:  # type: ignore[no-untyped-def]
    r = broker.client().post("/v1/auth/password", {"registration_code": world.codes["corp"],
                                                  "username": "dave",
                                                  "password": "correct horse battery staple"})
    assert r.status == 200 and r.body["user"]["username"] == "dave"
    assert r.body["workspaces"][0]["protocol"] == "PCoIP"


@pytest.mark.parametrize("username,password", [("dave", "wrong"), ("nobody", "x"),
                                               ("alice", "x")])
def test_password_login_refuses_bad_credentials(broker, world, username, password) -> None:  # type: ignore[no-untyped-def]
    r = broker.client().post("/v1/auth/password", {"registration_code": world.codes["corp"],
                                                  "username": username, "password": password})
    assert r.status == 401 and r.code == "invalid_credentials"


def test_password_login_disabled(broker, world) -> None:  # type: ignore[no-untyped-def]
    r = broker.client().post("/v1/auth/password", {"registration_code": world.codes["other"],
                                                  "username": "olga", "password": "x"})
    assert r.status == 403 and r.code == "password_login_disabled"


# ------------------------------------------------------------------ several processes

def race(a, b, w, senders: int) -> list[tuple[int, str | None]]:  # type: ignore[no-untyped-def]
    """Send the same signed response to two broker processes from ``senders`` threads at once."""
    client_a = SoftClient(a.client(), w.codes["corp"])
    client_b = SoftClient(b.client(), w.codes["corp"])
    ch = client_a.challenge().body
    statuses: list[tuple[int, str | None]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(senders)

    def send(c: SoftClient) -> None:
        barrier.wait()
        r = c.respond(ch, w.cards["alice"])
        with lock:
            statuses.append((r.status, r.code))

    threads = [threading.Thread(target=send, args=(client_a if i % 2 else client_b,))
               for i in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return statuses


@pytest.mark.postgres
def test_same_response_to_two_processes_succeeds_exactly_once(broker_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.databases import postgres_schema_url
    from tests.support.world import build_world

    with postgres_schema_url() as url:
        a = broker_factory(url)
        b = broker_factory(url)
        w = build_world(tmp_path / "w", a)
        for _ in range(5):
            statuses = race(a, b, w, 8)
            assert len(statuses) == 8
            assert [s for s in statuses if s[0] == 200] == [(200, None)], statuses
            assert all(code == "challenge_used" for s, code in statuses if s != 200), statuses
