"""`broker demo`: one full smart-card login, end to end, shown screen by screen.

It builds everything in ``var/demo/`` (wiped each run): an embedded SQLite broker, a demo PKI,
the demo directory from ``config/demo.toml`` (a WSP AUTO_STOP WorkSpace and a PCoIP one), a
virtual PIV card — behind pcscd's vpcd virtual reader when the PC/SC stack is installed, else
in-process, saying so — then runs the thin client's login flow against a real ``broker serve``
over TLS: Insert your smart card → certificate → PIN → Starting WorkSpace (the stopped WorkSpace
starts) → PIN → session; then it connects again to the now AVAILABLE WorkSpace, where
"Starting WorkSpace" asks for the PIN again too. It finishes by showing the PCoIP WorkSpace
refused for smart cards, and exits 0.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from broker.cli_common import common_options, fail
from broker.config import Settings
from broker.harness import BrokerProcess, HarnessError
from broker.shipped import shipped_path

VPCD_PORT = 35963


class DemoScreens:
    """The WorkSpaces client's screens, printed; the PIN is typed by the script (masked)."""

    def __init__(self, pin: str) -> None:
        self.pin = pin
        self.n = 0

    def show(self, title: str, text: str = "") -> None:
        self.n += 1
        click.secho(f"\n[{self.n}] {title}", bold=True)
        if text:
            click.echo(f"    {text}")

    def choose_certificate(self, options: Sequence[Any]) -> Any:
        self.show("Certificates", "Select your certificate:")
        for i, opt in enumerate(options):
            cert = opt.certificate
            click.echo(f"    {'>' if i == 0 else ' '} [{opt.slot_id}] {opt.label}: "
                       f"{cert.subject.rfc4514_string()}  (issued by "
                       f"{cert.issuer.rfc4514_string()})")
        return options[0]

    def ask_pin(self, prompt: str) -> str:
        click.echo(f"    {prompt}: {'*' * len(self.pin)}")
        return self.pin

    def choose_workspace(self, workspaces: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return workspaces[0]


def pcsc_available() -> str | None:
    """None when pcscd, the vpcd driver and pyscard are all here; else what is missing."""
    if shutil.which("pcscd") is None:
        return "pcscd is not installed"
    if not (Path("/etc/reader.conf.d/vpcd").exists() or
            list(Path("/usr/lib").glob("pcsc/drivers/serial/libifdvpcd*"))):
        return "vsmartcard-vpcd is not installed"
    try:
        import smartcard  # noqa: F401
    except ImportError:
        return "pyscard is not installed"
    return None


def pcscd_running() -> bool:
    return subprocess.run(["pgrep", "-x", "pcscd"], capture_output=True).returncode == 0


def start_broker(workdir: Path, db_url: str, start_delay: float) -> BrokerProcess:
    """The demo's broker, started by the same harness the tests and benchmarks use."""
    bp = BrokerProcess(workdir, db_url, log_level="warn")
    bp.write_config(f"[workspaces]\nstart_delay_s = {start_delay}\n")
    try:
        bp.start()
    except HarnessError:
        fail(f"the broker did not start; see {bp.log_path}")
    return bp


@click.command()
@common_options
@click.option("--pin", default="123456", show_default=True, help="The virtual card's PIN.")
@click.option("--card", "card_mode", type=click.Choice(["auto", "pcsc", "in-process"]),
              default="auto", show_default=True,
              help="pcsc: the card behind pcscd's virtual reader; in-process: no PC/SC.")
@click.option("--key-kind", type=click.Choice(["ec-p256", "ec-p384", "rsa-2048"]),
              default="ec-p256", show_default=True)
@click.option("--start-delay", type=float, default=3.0, show_default=True,
              help="Seconds the stopped WorkSpace takes to start.")
def demo(settings: Settings, pin: str, card_mode: str, key_kind: str,
         start_delay: float) -> None:
    """Run one full smart-card login end to end and show each step."""
    from cryptography.hazmat.primitives import serialization

    from broker.cardsim import PivCard
    from broker.client.access import InProcessCards, PcscCards
    from broker.client.flow import (
        WINDOWS_CLIENT,
        ApiError,
        BrokerApi,
        BrokerEndpoint,
        LoginFlow,
        describe_client,
    )
    from broker.errors import BrokerError
    from broker.pki import issue
    from broker.service import directories
    from broker.service.context import BrokerContext
    from broker.service.tickets import verify
    from broker.store import migrate

    os.umask(0o077)  # the demo's database, keys and card key are its own only, as serve's are
    workdir = settings.state_path / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "pki").mkdir(parents=True)
    db_url = f"sqlite:///{workdir / 'broker.db'}"
    click.secho("smartcard-broker demo", bold=True)
    click.echo(f"  working in {workdir}")

    migrate.upgrade(db_url)
    pki = issue.make_demo_pki(key_kind, username="demo.user", upn="demo.user@corp.example")
    (workdir / "pki" / "root.pem").write_bytes(pki.root.cert_pem())
    (workdir / "pki" / "issuing.pem").write_bytes(pki.intermediate.cert_pem())
    (workdir / "pki" / "issuing.crl.pem").write_bytes(
        issue.make_crl(pki.intermediate, []).public_bytes(serialization.Encoding.PEM))
    click.echo(f"  demo PKI: {pki.root.cert.subject.rfc4514_string()} → "
               f"{pki.intermediate.cert.subject.rfc4514_string()} → "
               f"{pki.user.cert.subject.rfc4514_string()}")

    ctx = BrokerContext(settings.replace("database", url=db_url))
    try:
        # The shipped file names the PKI relative to itself: a copy beside the PKI made above.
        directory_file = workdir / "demo.toml"
        directory_file.write_bytes(shipped_path("config", "demo.toml").read_bytes())
        loaded = directories.load_file(directory_file, set(ctx.catalogue.region_ids()))
        result = ctx.db.transaction(lambda s: directories.apply_loaded(
            s, loaded, catalogue=ctx.catalogue, actor="demo"))
    except BrokerError as exc:
        fail(exc.message)
    ctx.db.dispose()
    code = result.directories[0]["registration_codes"][0]
    prefix, _, body = code.partition("+")
    entry = ctx.catalogue.by_prefix(prefix)
    code = f"{entry.prefix if entry else prefix}+{body}"  # as an admin would hand it out
    click.echo(f"  directory 'demo' in us-gov-west-1, registration code {code}")

    bp = start_broker(workdir, db_url, start_delay)
    click.echo(f"  broker listening on https://127.0.0.1:{bp.port} (TLS, self-signed dev cert)")
    card = PivCard(key=pki.user.key, certificate=pki.user.cert, pin=pin)
    link = None
    started_pcscd: subprocess.Popen[bytes] | None = None
    cards: Any
    login = None
    try:
        missing = pcsc_available() if card_mode != "in-process" else "in-process card chosen"
        if missing and card_mode == "pcsc":
            fail(f"PC/SC card requested but {missing}")
        if missing:
            click.echo(f"  card: in-process virtual PIV card ({missing})")
            cards = InProcessCards(card)
        else:
            import fcntl

            # The vpcd ports are machine-wide: wait for any test run using them to finish.
            vpcd_lock = open("/tmp/smartcard-broker-vpcd.lock", "w")  # noqa: SIM115
            fcntl.flock(vpcd_lock, fcntl.LOCK_EX)
            if not pcscd_running():
                started_pcscd = subprocess.Popen(["pcscd", "-f"], stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL)
                time.sleep(1.0)
            from broker.cardsim.vpcd import VpcdLink

            link = VpcdLink(card, port=VPCD_PORT)
            link.start()
            if not link.wait_connected(10.0):
                fail(f"the virtual card could not reach vpcd on port {VPCD_PORT}; is pcscd "
                     "running? (or use --card in-process)")
            cards = PcscCards()
            click.echo("  card: virtual PIV card in pcscd's reader 'Virtual PCD 00 00' "
                       "(the simulator feeds vpcd over TCP; pyscard talks PC/SC)")
        api = BrokerApi(BrokerEndpoint("127.0.0.1", bp.port, cafile=str(bp.cafile)))
        click.echo(f"  presenting as client {describe_client(WINDOWS_CLIENT)} (--as-client: the "
                   "WorkSpaces Windows client, the only one allowed pre-session)")
        flow = LoginFlow(api, code, cards, DemoScreens(pin), client_info=WINDOWS_CLIENT,
                         poll_interval=0.5)
        login = flow.login(card_wait=15)
        for ws in login.workspaces:
            click.echo(f"    - {ws['id']}: {ws['name']} [{ws['protocol']}, "
                       f"{ws['running_mode']}, {ws['state']}]")
        session = flow.connect(login, "ws-demo-wsp")
        _, jwks = api.call("GET", "/v1/jwks.json")
        claims = verify(session["ticket"], jwks)
        flow.screens.show("Connected", f"session {session['id'][:12]}… on {claims['ws']} via "
                                       f"{session['gateway']['host']}:"
                                       f"{session['gateway']['port']} ({claims['proto']})")
        click.echo(f"    ticket verified with the broker's JWKS: sub={claims['sub']}, "
                   f"smart_card_redirection={claims['scr']}, expires {session['expires_at']}")
        click.echo(f"    heartbeat (card present): {flow.heartbeat(session, True)}")
        flow.end_session(session)
        flow.screens.show("Reconnect", "session ended; connecting again to ws-demo-wsp, now "
                                       "AVAILABLE: \"Starting WorkSpace\" asks for the PIN "
                                       "again on every smart-card connect")
        session = flow.connect(login, "ws-demo-wsp")
        click.echo(f"    session {session['id'][:12]}… opened right after the second PIN")
        flow.end_session(session)
        flow.screens.show("PCoIP WorkSpace", "connecting to ws-demo-pcoip with the smart-card "
                                             "login …")
        try:
            api.call("POST", "/v1/workspaces/ws-demo-pcoip/connect", {})
            fail("the PCoIP WorkSpace was not refused")
        except ApiError as exc:
            click.echo(f"    refused as it should be: {exc.status} {exc.code}: {exc.message}")
        click.secho("\ndemo finished: one full smart-card login, the PIN again on "
                    "both connects, PCoIP refused.", bold=True)
    except BrokerError as exc:
        fail(f"{exc.code}: {exc.message} (broker log: {bp.log_path})")
    finally:
        if login is not None:
            login.close()  # release the card before pcscd goes (else pyscard's __del__ complains)
        if link is not None:
            link.stop()
        bp.stop(timeout=15)
        if started_pcscd is not None:
            started_pcscd.terminate()
            started_pcscd.wait(10)
