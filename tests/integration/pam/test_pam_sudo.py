"""sudo through real PAM: pamtester → pam_exec → broker-client pam-auth → pcscd + vpcd + the
virtual PIV card → a running broker, with the PAM service file written by pam-setup."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.cardsim import PivCard
from tests.support.pam import Desktop, audit, pam_problem, remove_service
from tests.support.pcsc import vpcd_cards
from tests.support.require import unavailable

pytestmark = [pytest.mark.pcsc, pytest.mark.slow]


@pytest.fixture
def desktop(broker_factory: Any, tmp_path: Path) -> Iterator[tuple[Desktop, Any]]:
    problem = pam_problem()
    if problem:
        unavailable("pam", problem)
    from tests.support.databases import database_url
    from tests.support.world import build_world

    with database_url("sqlite", tmp_path) as url:
        bp = broker_factory(url)
        world = build_world(tmp_path / "w", bp)
        service = f"smartcard-broker-test-{os.getpid()}"
        d = Desktop(bp, tmp_path, service, tmp_path / "pam-auth.log",
                    tmp_path / "session.json")
        try:
            yield d, world
        finally:
            print("held login:", d.end())
            remove_service(service)


def test_sudo_with_the_card_in_a_us_east_1_wsp_session(desktop: Any) -> None:
    """The right PIN passes; a wrong one fails and costs a try; another PAM_USER fails; a
    pulled card fails within 10 s; every attempt the broker saw is audited as sudo."""
    d, w = desktop
    soft = w.cards["erin"]
    card = PivCard(key=soft.key, certificate=soft.cert)
    with vpcd_cards(card) as links:
        d.log_in(w.codes["east"], "erin", "erin password", "ws-erin")
        assert (d.session_file.stat().st_mode & 0o777) == 0o600

        ok, line, _ = d.sudo("erin", "123456")
        assert ok, line
        assert "granted user=erin purpose=sudo" in line

        ok, line, _ = d.sudo("erin", "654321")
        assert not ok and "reason=pin_invalid" in line and "2 tries left" in line
        assert card.pin.remaining == 2

        ok, line, _ = d.sudo("bob", "123456")
        assert not ok and "reason=user_mismatch" in line
        assert card.pin.remaining == 2  # refused before the card was asked

        links[0].remove()
        ok, line, took = d.sudo("erin", "123456")
        assert not ok and "reason=no_card" in line
        assert took < 10
        links[0].insert()

    events = audit(d.broker)
    granted = [e for e in events if e["kind"] == "in_session.auth" and e["outcome"] == "success"]
    assert len(granted) == 1 and granted[0]["username"] == "erin"
    assert granted[0]["details"]["purpose"] == "sudo"
    challenges = [e for e in events if e["kind"] == "in_session.challenge"]
    # the right PIN, the wrong PIN and the pulled card each asked the broker; bob did not
    assert len(challenges) == 3
    assert {e["details"]["purpose"] for e in challenges} == {"sudo"}


def test_pcoip_session_is_refused_in_session(desktop: Any) -> None:
    """The broker refuses before any card is asked (so no card is inserted here)."""
    d, w = desktop
    d.log_in(w.codes["corp"], "dave", "correct horse battery staple", "ws-dave")
    ok, line, _ = d.sudo("dave", "123456")
    assert not ok and "reason=in_session_not_allowed" in line
    refused = [e for e in audit(d.broker) if e["kind"] == "in_session.challenge"]
    assert refused and refused[0]["outcome"] == "refused"
    assert refused[0]["reason"] == "in_session_not_allowed"
    assert refused[0]["details"]["purpose"] == "sudo"


def test_ended_sessions_are_refused(desktop: Any) -> None:
    """Ended by the broker (admin terminate): the broker refuses. Ended by the client (the
    held login stops): the session file says so and the broker is not even asked."""
    d, w = desktop
    # heartbeats far apart, so the held login does not learn of the end before pam-auth does
    d.log_in(w.codes["east"], "erin", "erin password", "ws-erin", heartbeat_s=60)
    d.broker.run_cli("admin", "sessions", "terminate", d.session_id)
    ok, line, _ = d.sudo("erin", "123456")
    assert not ok and "reason=session_ended" in line
    refused = [e for e in audit(d.broker) if e["kind"] == "in_session.challenge"]
    assert refused[0]["outcome"] == "refused" and refused[0]["reason"] == "session_ended"
    assert refused[0]["details"]["purpose"] == "sudo"

    d.end()
    ended = json.loads(d.session_file.read_text())
    assert ended["state"] == "ended" and "auth_token" not in ended
    ok, line, _ = d.sudo("erin", "123456")
    assert not ok and "reason=session_ended" in line
    assert len([e for e in audit(d.broker) if e["kind"] == "in_session.challenge"]) == 1
