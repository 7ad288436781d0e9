"""`broker-client`: register, log in with the smart card, inspect the card, run a virtual card.

Every expected failure prints one line ``error: …`` and exits non-zero; the PIN is read without
echo (or from stdin with --pin-stdin) and is never printed or logged.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from broker.errors import BrokerError


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class TerminalScreens:
    """The WorkSpaces client's screens on a terminal."""

    def __init__(self, pin_stdin: bool, cert_slot: str | None) -> None:
        self.pin_stdin = pin_stdin
        self.cert_slot = cert_slot
        self._stdin_pins: list[str] | None = None

    def show(self, title: str, text: str = "") -> None:
        click.secho(f"== {title}", bold=True, err=True)
        if text:
            click.echo(f"   {text}", err=True)

    def choose_certificate(self, options: Sequence[Any]) -> Any:
        self.show("Certificates")
        for i, o in enumerate(options, 1):
            click.echo(f"   {i}. [{o.slot_id}] {o.label}: {o.certificate.subject.rfc4514_string()}",
                       err=True)
        if self.cert_slot:
            for o in options:
                if o.slot_id == self.cert_slot.lower():
                    return o
            fail(f"no accepted certificate in slot {self.cert_slot}")
        if len(options) == 1:
            return options[0]
        n = click.prompt("Select your certificate", type=click.IntRange(1, len(options)),
                         err=True)
        return options[n - 1]

    def ask_pin(self, prompt: str) -> str:
        if self.pin_stdin:
            if self._stdin_pins is None:
                self._stdin_pins = [line.strip() for line in sys.stdin.read().splitlines()
                                    if line.strip()]
            if not self._stdin_pins:
                fail("no PIN on standard input")
            # The same PIN serves both prompts unless a second line gives another.
            return self._stdin_pins.pop(0) if len(self._stdin_pins) > 1 else self._stdin_pins[0]
        return str(click.prompt(prompt, hide_input=True, err=True))

    def choose_workspace(self, workspaces: Sequence[dict[str, Any]]) -> dict[str, Any]:
        self.show("WorkSpaces")
        for i, w in enumerate(workspaces, 1):
            click.echo(f"   {i}. {w['id']} ({w['protocol']}, {w['running_mode']}, {w['state']})",
                       err=True)
        n = click.prompt("Connect to", type=click.IntRange(1, len(workspaces)), default=1,
                         err=True)
        return workspaces[n - 1]


class _Main(click.Group):
    """Turns any stray exception into one ``error:`` line, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokerError as exc:
            fail(exc.message)
        except OSError as exc:
            fail(f"{exc.strerror or exc} {exc.filename or ''}".strip())
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the CLI contract: one line, no traceback
            fail(f"unexpected {type(exc).__name__}: {exc}")


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Thin client for smartcard-broker: smart-card login to WorkSpaces."""


# ---- broker flow commands (register, login): owned by flow.py's author ------------------------


@main.command()
@click.argument("code")
@click.option("--broker", "broker_addr", required=True, help="Broker address HOST:PORT.")
@click.option("--cafile", type=click.Path(exists=True, dir_okay=False),
              help="Verify the broker against this CA instead of pinning its certificate.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to keep the registration (default ~/.config/smartcard-broker).")
def register(code: str, broker_addr: str, cafile: str | None, config_path: Path | None) -> None:
    """Register with a registration CODE: stores the code and the broker's TLS pin."""
    from broker.client.flow import (
        BrokerApi,
        BrokerEndpoint,
        LoginFlow,
        fetch_certificate_pin,
        save_registration,
    )

    try:
        ep = BrokerEndpoint.parse(broker_addr, cafile=cafile)
        if not cafile:
            ep.pin_sha256 = fetch_certificate_pin(ep.host, ep.port)
        reg = LoginFlow(BrokerApi(ep), code, cards=None, screens=None).register()  # type: ignore[arg-type]
        path = save_registration(broker_addr, code, ep.pin_sha256, cafile, config_path)
    except BrokerError as exc:
        fail(exc.message)
    click.echo(f"registered with {reg['directory']['name']} ({reg['region']}); "
               f"login methods: {', '.join(reg['login_methods']) or 'none'}")
    if "smart_card" not in reg["login_methods"]:
        reasons = ", ".join(reg["smart_card"].get("reasons", []))
        click.echo(f"smart-card login is not offered here: {reasons}")
    if ep.pin_sha256:
        click.echo(f"broker certificate pinned: sha256 {ep.pin_sha256}")
    click.echo(f"saved to {path}")


@main.command()
@click.option("--reader", help="Use this PC/SC reader.")
@click.option("--pin-stdin", is_flag=True, help="Read the PIN(s) from standard input.")
@click.option("--cert", "cert_slot", help="Certificate slot to use, e.g. 9a.")
@click.option("--workspace", "workspace_id", help="WorkSpace to connect to.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the session as JSON.")
@click.option("--hold", is_flag=True,
              help="Stay connected: send heartbeats reporting whether the card is still in "
                   "the reader, and follow the broker's lock/disconnect answers.")
@click.option("--heartbeat-interval", type=click.FloatRange(0.2, 300), default=15.0,
              show_default=True, help="Seconds between heartbeats with --hold.")
def login(reader: str | None, pin_stdin: bool, cert_slot: str | None,
          workspace_id: str | None, config_path: Path | None, as_json: bool, hold: bool,
          heartbeat_interval: float) -> None:
    """Log in with the smart card and connect to a WorkSpace."""
    from broker.client.access import PcscCards
    from broker.client.flow import BrokerApi, BrokerEndpoint, LoginFlow, load_registration

    try:
        saved = load_registration(config_path)
        ep = BrokerEndpoint.parse(saved["broker"], cafile=saved.get("cafile"),
                                  pin_sha256=saved.get("tls_pin_sha256"))
        flow = LoginFlow(BrokerApi(ep), saved["registration_code"], PcscCards(reader),
                         TerminalScreens(pin_stdin, cert_slot))
        result = flow.login()
        session = flow.connect(result, workspace_id)
    except BrokerError as exc:
        fail(exc.message)
    if as_json:
        click.echo(json.dumps(session, indent=2))
    else:
        click.echo(f"session {session['id']} on {session['workspace_id']} via "
                   f"{session['gateway']['host']}:{session['gateway']['port']} "
                   f"({session['gateway']['protocol']}), expires {session['expires_at']}")
    if hold:
        hold_session(flow, session, reader, heartbeat_interval)


def hold_session(flow: Any, session: dict[str, Any], reader: str | None,
                 interval: float) -> None:
    """Heartbeat until the broker says disconnect (or Ctrl-C, which ends the session)."""
    import time

    from broker.client import transport

    last = "none"
    try:
        while True:
            try:
                present = transport.card_count(reader) > 0
            except BrokerError:
                present = False
            try:
                action = flow.heartbeat(session, present)
            except BrokerError as exc:
                fail(f"session ended: {exc.message}")
            if action != last:
                click.echo(f"heartbeat: card {'present' if present else 'removed'} → {action}",
                           err=True)
                last = action
            if action == "disconnect":
                click.echo("disconnected", err=True)
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        flow.api.call("DELETE", f"/v1/sessions/{session['id']}")
        click.echo("session ended", err=True)


# ---- card-side commands ---------------------------------------------------------------------


@main.group()
def card() -> None:
    """The smart card in the reader."""


def card_info_dict(reader_name: str | None, sc: Any) -> dict[str, Any]:
    """What ``card info`` shows, as plain values (no PIN, nothing secret)."""
    chuid = sc.read_chuid()
    certs = sc.certificates()
    return {"reader": reader_name, "atr": sc.atr.hex(), "kind": sc.kind,
            "fasc_n": chuid.fasc_n.hex() if chuid and chuid.fasc_n else None,
            "card_uuid": str(uuid.UUID(bytes=chuid.guid))
            if chuid and chuid.guid and len(chuid.guid) == 16 else None,
            "pin_tries_left": sc.pin_attempts_remaining(),
            "certificates": [{"slot": c.slot_id, "label": c.label,
                              "subject": c.certificate.subject.rfc4514_string(),
                              "issuer": c.certificate.issuer.rfc4514_string(),
                              "not_after": c.certificate.not_valid_after_utc.isoformat(),
                              "algorithm": sc.default_algorithm(c.certificate)}
                             for c in certs]}


@card.command("info")
@click.option("--reader", help="Use this PC/SC reader.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def card_info(reader: str | None, as_json: bool) -> None:
    """Reader, ATR, card kind, CHUID and certificates, PIN tries left."""
    from broker.client import transport
    from broker.client.card import open_card

    conn = transport.connect(reader)
    try:
        info = card_info_dict(conn.reader, open_card(conn))
    finally:
        conn.disconnect()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key in ("reader", "atr", "kind", "fasc_n", "card_uuid", "pin_tries_left"):
        click.echo(f"{key}: {info[key] if info[key] is not None else '-'}")
    for c in info["certificates"]:
        click.echo(f"[{c['slot']}] {c['label']}: {c['subject']} (issuer {c['issuer']}, "
                   f"until {c['not_after']})")


@main.command("nss-setup")
@click.option("--dbdir", type=click.Path(file_okay=False, path_type=Path),
              help="NSS database folder (default ~/.pki/nssdb).")
@click.option("--module", "module_path", help="Path of opensc-pkcs11.so (default: found).")
@click.option("--firefox-policy", type=click.Path(dir_okay=False, path_type=Path),
              help="Also merge a Firefox enterprise policy (SecurityDevices) into this file.")
def nss_setup(dbdir: Path | None, module_path: str | None,
              firefox_policy: Path | None) -> None:
    """Register OpenSC's PKCS#11 module in the NSS database (Chrome, Firefox in-session)."""
    from broker.client import nss

    module = module_path or nss.find_opensc_module()
    click.echo(nss.register_opensc(dbdir, module))
    if firefox_policy:
        nss.write_firefox_policy(firefox_policy, module)
        click.echo(f"Firefox policy written to {firefox_policy}")


def _mount_card_sim() -> None:
    """``card-sim`` comes from the simulator package when it is installed alongside."""
    try:
        from broker.cardsim.cli import card_sim
    except ImportError:
        return
    main.add_command(card_sim, "card-sim")


_mount_card_sim()


if __name__ == "__main__":
    main()
