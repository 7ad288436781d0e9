"""Console sessions and the overview's figures, on a real (migrated) database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from broker.admin.directories import create_directory
from broker.admin.trust import add_trust
from broker.config import Settings
from broker.service import admin_tokens, audit, console
from broker.service.context import BrokerContext
from broker.service.errors import ServiceError

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def ctx(database: Any) -> BrokerContext:
    return BrokerContext(Settings(base_dir=REPO), database=database)


@pytest.fixture
def token(ctx: BrokerContext) -> str:
    return ctx.db.transaction(lambda s: admin_tokens.create(s, "root", "write", "cli:test"))[1]


def sign_in(ctx: BrokerContext, presented: str, at: datetime = T0) -> str:
    return ctx.db.transaction(lambda s: console.sign_in(s, presented, at))[0]


def resolve(ctx: BrokerContext, secret: str, at: datetime) -> console.ConsoleIdentity:
    return ctx.db.transaction(lambda s: console.resolve(s, secret, at))


def test_a_session_slides_while_used_and_ends_when_idle(ctx: BrokerContext, token: str) -> None:
    secret = sign_in(ctx, token)
    assert resolve(ctx, secret, T0 + timedelta(minutes=29)).scope == "write"
    assert resolve(ctx, secret, T0 + timedelta(minutes=58)).token_name == "root"
    with pytest.raises(ServiceError):
        resolve(ctx, secret, T0 + timedelta(minutes=58 + 31))


def test_a_session_never_outlives_its_absolute_limit(ctx: BrokerContext, token: str) -> None:
    secret = sign_in(ctx, token)
    at = T0
    while at < T0 + console.ABSOLUTE - timedelta(minutes=20):
        at += timedelta(minutes=20)
        resolve(ctx, secret, at)
    with pytest.raises(ServiceError):
        resolve(ctx, secret, T0 + console.ABSOLUTE + timedelta(minutes=1))


def test_the_cookie_secret_is_stored_only_as_a_hash(ctx: BrokerContext, token: str) -> None:
    from sqlalchemy import select

    from broker.store.models import ConsoleSession

    secret = sign_in(ctx, token)
    [row] = ctx.db.read(lambda s: list(s.scalars(select(ConsoleSession))))
    assert secret not in (row.secret_hash, row.csrf_token)
    with pytest.raises(ServiceError):
        resolve(ctx, row.secret_hash, T0)


def test_csrf_is_compared_exactly(ctx: BrokerContext, token: str) -> None:
    who = resolve(ctx, sign_in(ctx, token), T0)
    assert console.csrf_ok(who, who.csrf_token)
    assert not console.csrf_ok(who, None)
    assert not console.csrf_ok(who, "")
    assert not console.csrf_ok(who, who.csrf_token[:-1])


def test_logins_are_counted_per_hour_by_outcome_and_refusals_by_reason(
        ctx: BrokerContext) -> None:
    def work(s: Any) -> None:
        audit.insert(s, "login.smart_card", "success", directory_id="corp")
        audit.insert(s, "login.smart_card", "refused", reason="certificate_revoked")
        audit.insert(s, "login.password", "refused", reason="password_wrong")
        audit.insert(s, "login.smart_card", "refused", reason="certificate_revoked")
        audit.insert(s, "directory.create", "change")  # not a login decision

    ctx.db.transaction(work)
    series = ctx.db.read(lambda s: console.login_series(s, datetime.now(UTC)))
    assert len(series["buckets"]) == 24
    assert series["counts"]["success"][-1] == 1
    assert series["counts"]["refused"][-1] == 3
    assert sum(series["counts"]["success"][:-1]) == 0
    assert series["reasons"] == [("certificate_revoked", 2), ("password_wrong", 1)]


def test_policy_notes_say_what_each_region_allows(ctx: BrokerContext) -> None:
    notes = console.directory_notes(ctx.catalogue)
    east = notes["us-east-1"]["smart_card.pre_session"]
    assert (east["ok"], east["code"]) == ("no", "region_pre_session_unavailable")
    assert "us-east-1" in east["message"]
    assert notes["us-gov-west-1"]["smart_card.pre_session"]["ok"] == "yes"


def test_warnings_name_expiring_cas_and_ineffective_settings(ctx: BrokerContext) -> None:
    from broker.pki import issue

    soon = issue.make_root("Short-lived Root", not_after=datetime.now(UTC) + timedelta(days=5))

    def work(s: Any) -> None:
        create_directory(s, ctx, {"id": "east", "name": "East", "region": "us-east-1",
                                        "smart_card": {"pre_session": True},
                                        "password_login": True}, "t")
        add_trust(s, "east", soon.cert_pem().decode(), None, "t")

    ctx.db.transaction(work)
    found = ctx.db.read(lambda s: console.warnings(s, ctx.catalogue, datetime.now(UTC)))
    assert {(w["code"], w["directory"]) for w in found} == {
        ("ca_expiring", "east"), ("region_pre_session_unavailable", "east")}
