"""Other card types (issue 28, item 4): a card that answers neither the PIV nor the CAC applet
logs in through OpenSC's PKCS#11 module, with a warning; --strict-card-types refuses it.

The card is the simulator's OpenPGP card in pcscd's vpcd reader; OpenSC's own tools read it
first (outside check), then `broker-client` logs in against a real broker.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from broker.cardsim.openpgp import OpenPgpCard
from tests.support.pcsc import CLIENT_CLI, register_client, vpcd_cards
from tests.support.require import unavailable

pytestmark = pytest.mark.pcsc

MODULE = Path("/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so")


@pytest.fixture(autouse=True)
def _opensc() -> None:
    if not MODULE.exists() or shutil.which("pkcs15-tool") is None:
        unavailable("opensc", "OpenSC is not installed (apt-get install opensc)")
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        unavailable("opensc", "python-pkcs11 is not installed (pip install "
                              "'smartcard-broker[card]')")


def login(config: Path, *extra: str, pin: str = "123456") -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLIENT_CLI + ["login", "--config", str(config), "--pin-stdin",
                                        "--workspace", "ws-alice", *extra],
                          input=f"{pin}\n", capture_output=True, text=True, timeout=120)


def test_opensc_reads_the_simulated_openpgp_card() -> None:
    from broker.pki import issue

    p = issue.make_demo_pki()
    with vpcd_cards(OpenPgpCard(p.user.key, p.user.cert)):
        dump = subprocess.run(["pkcs15-tool", "-D"], capture_output=True, text=True,
                              timeout=60)
        objects = subprocess.run(["pkcs11-tool", "--module", str(MODULE), "--list-objects"],
                                 capture_output=True, text=True, timeout=60)
        info = subprocess.run(CLIENT_CLI + ["card", "info", "--json"], capture_output=True,
                              text=True, timeout=60)
        strict = subprocess.run(CLIENT_CLI + ["card", "info", "--strict-card-types"],
                                capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    assert "OpenPGP card" in dump.stdout
    assert "Private" in dump.stdout and "[Authentication key]" in dump.stdout
    assert "X.509 Certificate [AUT certificate]" in dump.stdout
    assert objects.returncode == 0, objects.stderr
    assert "Certificate Object" in objects.stdout and "ID:         03" in objects.stdout
    assert info.returncode == 0, info.stderr
    card = json.loads(info.stdout)
    assert card["kind"] == "pkcs11" and card["certificates"][0]["slot"] == "03"
    assert "demo.user" in card["certificates"][0]["subject"]
    assert "not fully tested" in info.stderr
    assert strict.returncode == 1
    assert "--strict-card-types allows no other card type" in strict.stderr


def test_a_card_opensc_does_not_know_either_is_refused_in_one_line() -> None:
    from broker.cardsim.card import SecurityState, VirtualCard

    blank = VirtualCard([], bytes.fromhex("3b8580018076504750b5"), SecurityState())
    with vpcd_cards(blank):
        info = subprocess.run(CLIENT_CLI + ["card", "info"], capture_output=True, text=True,
                              timeout=60)
    assert info.returncode == 1
    assert info.stderr.strip() == ("error: This card has neither a PIV application nor CAC PKI "
                                   "applets, and OpenSC does not know it either.")


@pytest.mark.parametrize("card_name", ["alice_rsa", "alice"])
def test_login_through_pkcs11_and_strict_refusal(broker_factory, tmp_path, card_name) -> None:  # type: ignore[no-untyped-def]
    """`broker-client login` with an OpenPGP card (RSA on a 2.1 card, ECDSA on a 3.3 one):
    both PINs go through C_Login, both signatures through C_Sign, and the broker verifies them
    unchanged; a wrong PIN counts down on the card; --strict-card-types refuses the card
    before any PIN is asked."""
    from tests.support.databases import database_url
    from tests.support.world import build_world

    with database_url("sqlite", tmp_path) as url:
        bp = broker_factory(url)
        w = build_world(tmp_path / "w", bp)
        soft = w.cards[card_name]
        cfg = tmp_path / "client.json"
        register_client(bp, w.codes["corp"], cfg)
        card = OpenPgpCard(soft.key, soft.cert)
        with vpcd_cards(card):
            strict = login(cfg, "--strict-card-types")
            refused_tries = card.pin.remaining
            bad = login(cfg, pin="654321")
            bad_tries = card.pin.remaining
            ok = login(cfg)
    assert strict.returncode == 1
    assert "card_not_supported" in strict.stderr
    assert "--strict-card-types allows no other card type" in strict.stderr
    assert refused_tries == 3  # refused before the PIN reached the card
    assert bad.returncode == 1 and "card_pin_invalid" in bad.stderr
    assert bad_tries == 2  # the wrong PIN reached the card through C_Login
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("session "), ok.stdout
    warnings = [ln for ln in ok.stderr.splitlines() if "not fully tested" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ")
    assert "123456" not in ok.stderr + ok.stdout


class Scripted:
    """The flow's screens with scripted PINs (one per prompt)."""

    def __init__(self, pins: list[str]) -> None:
        self.pins = list(pins)
        self.prompts: list[str] = []

    def show(self, title: str, text: str = "") -> None:
        pass

    def choose_certificate(self, options):  # type: ignore[no-untyped-def]
        return options[0]

    def ask_pin(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.pins.pop(0)

    def choose_workspace(self, workspaces):  # type: ignore[no-untyped-def]
        return workspaces[0]


def test_the_second_pin_is_checked_by_the_card_again(broker_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """"Starting WorkSpace" logs in to the token anew: a wrong second PIN is refused by the
    card (not satisfied by the first login or a cached PIN), then the right one connects."""
    from broker.client.access import PcscCards
    from broker.client.errors import InvalidPinError
    from broker.client.flow import WINDOWS_CLIENT, BrokerApi, BrokerEndpoint, LoginFlow
    from tests.support.databases import database_url
    from tests.support.world import build_world

    with database_url("sqlite", tmp_path) as url:
        bp = broker_factory(url)
        w = build_world(tmp_path / "w", bp)
        soft = w.cards["alice"]
        card = OpenPgpCard(soft.key, soft.cert)
        warned: list[str] = []
        screens = Scripted(["123456", "000000", "123456"])
        api = BrokerApi(BrokerEndpoint("127.0.0.1", bp.port, cafile=str(bp.cafile)))
        flow = LoginFlow(api, w.codes["corp"], PcscCards(warn=warned.append), screens,
                         client_info=WINDOWS_CLIENT, poll_interval=0.3)
        with vpcd_cards(card):
            result = flow.login(card_wait=5)
            try:
                assert result.certificate_slot == "03" and result.card.kind == "pkcs11"
                with pytest.raises(InvalidPinError) as wrong:
                    flow.connect(result, "ws-alice")
                assert wrong.value.code == "card_pin_invalid"
                assert card.pin.remaining == 2
                session = flow.connect(result, "ws-alice")
            finally:
                result.close()
    assert session["smart_card_redirection"] is True
    assert screens.prompts == ["Enter your PIN", "Enter your PIN again", "Enter your PIN again"]
    assert len(warned) == 1 and "not fully tested" in warned[0]
