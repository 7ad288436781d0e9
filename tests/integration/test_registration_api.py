"""POST /v1/registrations over real TLS: login methods offered per region, client and code."""

from __future__ import annotations

import pytest

from tests.support.softcard import WINDOWS, SoftClient


def register(broker, code: str, **client: str):  # type: ignore[no-untyped-def]
    return SoftClient(broker.client(), code, {**WINDOWS, **client}).register()


def test_govcloud_offers_smart_card_to_windows_64_bit_3_1_1(broker, world) -> None:  # type: ignore[no-untyped-def]
    r = register(broker, world.codes["corp"])
    assert r.status == 200
    assert r.body["login_methods"] == ["smart_card", "password"]
    assert r.body["region"] == "us-gov-west-1"
    assert r.body["directory"] == {"id": "corp", "name": "Corp GovCloud"}
    assert r.body["smart_card"]["pre_session"] is True
    assert r.body["smart_card"]["in_session"] is True


@pytest.mark.parametrize("client,reason", [
    ({"version": "3.1.0"}, "client_version_unsupported"),
    ({"arch": "x86"}, "client_arch_unsupported"),
    ({"platform": "macos"}, "client_platform_unsupported"),
    ({"platform": "linux"}, "client_platform_unsupported"),
    ({"version": "not-a-version"}, "client_version_unsupported"),
])
def test_govcloud_refuses_smart_card_with_reason(broker, world, client, reason) -> None:  # type: ignore[no-untyped-def]
    r = register(broker, world.codes["corp"], **client)
    assert r.status == 200
    assert "smart_card" not in r.body["login_methods"]
    assert "password" in r.body["login_methods"]
    assert reason in r.body["smart_card"]["reasons"]
    # the same client rule holds in-session: this client's sessions get no card inside
    assert r.body["smart_card"]["in_session"] is False
    assert reason in r.body["smart_card"]["in_session_reasons"]


def test_two_cards_are_refused_at_the_challenge(broker, world) -> None:  # type: ignore[no-untyped-def]
    r = SoftClient(broker.client(), world.codes["corp"]).challenge(card_count=2)
    assert r.status == 403 and r.code == "smart_card_not_allowed"
    assert r.body["error"]["details"]["reasons"] == ["multiple_cards"]


def test_us_east_1_never_offers_pre_session_but_reports_in_session(broker, world) -> None:  # type: ignore[no-untyped-def]
    r = register(broker, world.codes["east"])
    assert r.status == 200
    assert "smart_card" not in r.body["login_methods"]
    assert r.body["smart_card"]["pre_session"] is False
    assert "region_pre_session_unavailable" in r.body["smart_card"]["reasons"]
    assert r.body["smart_card"]["in_session"] is True


def test_code_is_case_and_whitespace_tolerant(broker, world) -> None:  # type: ignore[no-untyped-def]
    code = world.codes["corp"]
    messy = "  " + code.lower()[:6] + " " + code.lower()[6:] + " "
    assert register(broker, messy).status == 200


def test_malformed_code_is_400(broker, world) -> None:  # type: ignore[no-untyped-def]
    code = world.codes["corp"]
    prefix, body = code.split("+")
    typo = prefix + "+" + body[:3] + ("A" if body[3] != "A" else "B") + body[4:]
    r = register(broker, typo)
    assert r.status == 400 and r.code == "registration_code_malformed"
    assert register(broker, "hello").code == "registration_code_malformed"


def test_unknown_code_is_404(broker, world) -> None:  # type: ignore[no-untyped-def]
    from broker import registration

    prefix = world.codes["corp"].split("+")[0]
    unknown = str(registration.generate(prefix))
    r = register(broker, unknown)
    assert r.status == 404 and r.code == "registration_code_unknown"


def test_revoked_code_is_410_and_rotated_code_works_in_grace(broker, world) -> None:  # type: ignore[no-untyped-def]
    from broker.config import load_settings
    from broker.service import registrations
    from broker.service.context import BrokerContext

    ctx = BrokerContext(load_settings(broker.config_path, environ={}))
    new = ctx.db.transaction(lambda s: registrations.rotate_code(
        ctx, s, world.codes["corp"], "test"))
    assert register(broker, world.codes["corp"]).status == 200  # grace period
    assert register(broker, new).status == 200
    ctx.db.transaction(lambda s: registrations.revoke_code(ctx, s, new, "test"))
    r = register(broker, new)
    assert r.status == 410 and r.code == "registration_code_revoked"
    ctx.db.dispose()


def test_unknown_fields_and_bad_json_are_400(broker, world) -> None:  # type: ignore[no-untyped-def]
    api = broker.client()
    r = api.post("/v1/registrations", {"registration_code": world.codes["corp"],
                                       "client": WINDOWS, "extra": 1})
    assert r.status == 400 and r.code == "malformed_request" and "extra" in r.body["error"][
        "message"]
    r = api.post("/v1/registrations", raw=b"{not json")
    assert r.status == 400 and r.code == "malformed_request"
    r = api.post("/v1/registrations", {"registration_code": 5, "client": WINDOWS})
    assert r.status == 400 and r.code == "malformed_request"


def test_huge_body_is_413(broker) -> None:  # type: ignore[no-untyped-def]
    r = broker.client().post("/v1/registrations", raw=b"{" + b" " * 70000 + b"}")
    assert r.status == 413 and r.code == "request_too_large"
