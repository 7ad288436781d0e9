"""Whole logins through pcscd + vpcd + the simulator + pyscard against a running broker."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from broker.cardsim import PivCard
from broker.client import transport
from broker.client.access import PcscCards
from broker.client.card import open_card
from broker.client.errors import InvalidPinError, PinBlockedError
from broker.client.flow import (
    WINDOWS_CLIENT,
    BrokerApi,
    BrokerEndpoint,
    FlowError,
    LoginFlow,
)
from tests.support.pcsc import hold_command, register_client, vpcd_cards

pytestmark = pytest.mark.pcsc


class Scripted:
    def __init__(self, pins: list[str]) -> None:
        self.pins = list(pins)
        self.titles: list[str] = []
        self.prompts: list[str] = []

    def show(self, title: str, text: str = "") -> None:
        self.titles.append(title)

    def choose_certificate(self, options):  # type: ignore[no-untyped-def]
        return options[0]

    def ask_pin(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.pins.pop(0) if len(self.pins) > 1 else self.pins[0]

    def choose_workspace(self, workspaces):  # type: ignore[no-untyped-def]
        return workspaces[0]


@pytest.fixture(params=["sqlite"])
def pcsc_broker(request, broker_factory, tmp_path):  # type: ignore[no-untyped-def]
    from tests.support.databases import database_url
    from tests.support.world import build_world

    with database_url(request.param, tmp_path) as url:
        bp = broker_factory(url, BROKER_WORKSPACES_START_DELAY_S="1")
        yield bp, build_world(tmp_path / "w", bp)


def flow(bp, w, screens, directory="corp"):  # type: ignore[no-untyped-def]
    api = BrokerApi(BrokerEndpoint("127.0.0.1", bp.port, cafile=str(bp.cafile)))
    return LoginFlow(api, w.codes[directory], PcscCards(), screens, client_info=WINDOWS_CLIENT,
                     poll_interval=0.3)


@pytest.mark.parametrize("pcsc_broker", ["sqlite", pytest.param("postgresql",
                                                                  marks=pytest.mark.postgres)],
                         indirect=True)
@pytest.mark.parametrize("card_name", ["alice", "alice_rsa"])
def test_full_login_with_both_pins_through_pcsc(pcsc_broker, card_name) -> None:  # type: ignore[no-untyped-def]
    bp, w = pcsc_broker
    soft = w.cards[card_name]
    with vpcd_cards(PivCard(key=soft.key, certificate=soft.cert)):
        screens = Scripted(["123456"])
        f = flow(bp, w, screens)
        login = f.login(card_wait=5)
        session = f.connect(login, "ws-alice")
        assert session["gateway"]["protocol"] == "WSP"
        assert screens.titles[:4] == ["Insert your smart card", "Smart Card", "Signed in",
                                      "Starting WorkSpace"]
        assert f.heartbeat(session, card_present=transport.card_count() == 1) == "none"


@pytest.mark.parametrize("dual", [False, True])
def test_full_login_with_a_cac_card_through_pcsc(pcsc_broker, dual) -> None:  # type: ignore[no-untyped-def]
    """A CAC (PKI applets; with dual=True also a PIV applet) logs in with both PINs."""
    from broker.cardsim.cac import CacCard
    from broker.cardsim.piv import KeySlot

    bp, w = pcsc_broker
    soft = w.cards["alice"]
    with vpcd_cards(CacCard(KeySlot(soft.key, soft.cert), dual=dual)):
        f = flow(bp, w, Scripted(["123456"]))
        login = f.login(card_wait=5)
        assert login.user["username"] == "alice"
        session = f.connect(login, "ws-alice")
        assert session["smart_card_redirection"] is True


def test_card_removal_is_reported_and_locks(pcsc_broker) -> None:  # type: ignore[no-untyped-def]
    bp, w = pcsc_broker
    soft = w.cards["bob"]
    with vpcd_cards(PivCard(key=soft.key, certificate=soft.cert)) as links:
        screens = Scripted(["123456"])
        f = flow(bp, w, screens)
        login = f.login(card_wait=5)
        session = f.connect(login, "ws-bob")
        # ws-bob is AVAILABLE, and "Starting WorkSpace" still asks for the PIN again.
        assert screens.prompts == ["Enter your PIN", "Enter your PIN again"]
        links[0].remove()
        assert transport.wait_for_removal(timeout=5)
        assert f.heartbeat(session, card_present=transport.card_count() > 0) == "lock"
        links[0].insert()


def test_two_cards_are_refused(pcsc_broker) -> None:  # type: ignore[no-untyped-def]
    bp, w = pcsc_broker
    a, b = w.cards["alice"], w.cards["bob"]
    with vpcd_cards(PivCard(key=a.key, certificate=a.cert), PivCard(key=b.key,
                                                                     certificate=b.cert)):
        assert transport.card_count() == 2
        # The broker refuses (smart_card_not_allowed, reason multiple_cards); the client tells
        # the user which readers hold a card and how to choose one.
        with pytest.raises(FlowError) as err:
            flow(bp, w, Scripted(["123456"])).login(card_wait=5)
        assert err.value.code == "multiple_cards"
        assert '"Virtual PCD 00 00", "Virtual PCD 00 01"' in err.value.message
        assert '--reader "Virtual PCD 00 00"' in err.value.message


def test_wrong_pin_counts_down_then_blocks_and_puk_unblocks() -> None:
    from broker.pki import issue

    p = issue.make_demo_pki()
    with vpcd_cards(PivCard(key=p.user.key, certificate=p.user.cert)):
        card = open_card(transport.connect())
        for left in (2, 1):
            with pytest.raises(InvalidPinError) as err:
                card.verify_pin("000000")
            assert err.value.attempts_remaining == left
        with pytest.raises(PinBlockedError):
            card.verify_pin("000000")
        with pytest.raises(PinBlockedError):
            card.verify_pin("123456")  # blocked: even the right PIN is refused
        assert card.pin_attempts_remaining() == 0


def test_pcoip_refused_and_smart_card_not_offered_outside_govcloud(pcsc_broker) -> None:  # type: ignore[no-untyped-def]
    bp, w = pcsc_broker
    soft = w.cards["erin"]
    with vpcd_cards(PivCard(key=soft.key, certificate=soft.cert)):
        with pytest.raises(FlowError) as err:
            flow(bp, w, Scripted(["123456"]), directory="east").login(card_wait=5)
        assert err.value.code == "smart_card_not_offered"


def test_broker_client_card_info_reads_the_card() -> None:
    from broker.pki import issue

    p = issue.make_demo_pki()
    with vpcd_cards(PivCard(key=p.user.key, certificate=p.user.cert)):
        out = subprocess.run([sys.executable, "-m", "broker.client.cli", "card", "info",
                              "--json"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        info = json.loads(out.stdout)
        assert info["kind"] == "piv" and info["pin_tries_left"] == 3
        assert info["certificates"][0]["slot"] == "9a"
        assert "demo.user" in info["certificates"][0]["subject"]


def test_broker_client_register_login_hold_reports_card_removal(broker_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The CLI end to end: register, log in with the PIN on stdin, hold the session; pulling
    the card is reported by the next heartbeat and the broker's disconnect ends the client."""
    import time

    from tests.support.databases import database_url
    from tests.support.world import build_world

    with database_url("sqlite", tmp_path) as url:
        bp = broker_factory(url)
        w = build_world(tmp_path / "w", bp, removal="disconnect")
        soft = w.cards["bob"]
        cfg = tmp_path / "client.json"
        register_client(bp, w.codes["corp"], cfg)
        with vpcd_cards(PivCard(key=soft.key, certificate=soft.cert)) as links:
            proc = subprocess.Popen(hold_command(cfg, "ws-bob"),
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("123456\n")
            proc.stdin.close()
            line = proc.stdout.readline()
            assert line.startswith("session "), (line, proc.stderr.read() if proc.stderr
                                                  else "")
            time.sleep(0.5)
            links[0].remove()
            proc.wait(60)
            err = proc.stderr.read() if proc.stderr else ""
            assert proc.returncode == 0, err
            assert "card removed → disconnect" in err and "123456" not in err
