"""`broker-client`: register, log in with the smart card, inspect the card, run a virtual card.

Every expected failure prints one line ``error: …`` and exits non-zero; the PIN is read without
echo (or from stdin with --pin-stdin) and is never printed or logged.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from broker.client.cli_util import fail, warn
from broker.errors import BrokerError


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
        """Names first; a WorkSpace this login cannot use is marked, and the default is the
        first one it can."""
        self.show("WorkSpaces")
        for i, w in enumerate(workspaces, 1):
            note = ("" if w.get("usable", True)
                    else " - PCoIP: password login only, not with a smart card")
            click.echo(f"   {i}. {w.get('name') or w['id']} [{w['id']}] ({w['protocol']}, "
                       f"{w['running_mode']}, {w['state']}){note}", err=True)
        usable = [i for i, w in enumerate(workspaces, 1) if w.get("usable", True)]
        n = click.prompt("Connect to", type=click.IntRange(1, len(workspaces)),
                         default=usable[0] if usable else 1, err=True)
        return workspaces[n - 1]


class _Main(click.Group):
    """Turns any stray exception into one ``error:`` line, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokerError as exc:
            from broker.client.flow import for_people

            fail(for_people(exc))
        except OSError as exc:
            fail(f"{exc.strerror or exc} {exc.filename or ''}".strip())
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the CLI contract: one line, no traceback
            fail(f"unexpected {type(exc).__name__}: {exc}")


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="smartcard-broker", prog_name="broker-client",
                      message="%(prog)s %(version)s")
def main() -> None:
    """Thin client for smartcard-broker: smart-card login to WorkSpaces."""


def as_client_option(f: Any) -> Any:
    return click.option(
        "--as-client", "as_client", metavar="PLATFORM/ARCH/VERSION",
        help="Present this client to the broker as another one, e.g. windows/x86_64/3.1.1 "
             "(the WorkSpaces Windows client). Default: the real platform, architecture and "
             "version, so the broker's rules apply honestly (a Linux client gets password "
             "login only, and its sessions no in-session card use).")(f)


def strict_card_types_option(f: Any) -> Any:
    return click.option(
        "--strict-card-types", is_flag=True,
        help="Use PIV and CAC cards only. Without it, another card type (e.g. an OpenPGP "
             "card) is used through its PKCS#11 module (OpenSC), with a warning that the card "
             "type is not fully tested.")(f)


def client_identity(as_client: str | None, saved: dict[str, Any] | None = None
                    ) -> tuple[dict[str, str], str]:
    """The client object to send and a line saying which it is (and why)."""
    from broker.client.flow import describe_client, parse_client_spec, real_client_info

    spec = as_client or (saved or {}).get("as_client")
    if spec:
        info = parse_client_spec(spec)
        return info, f"presenting as client {describe_client(info)} (--as-client)"
    info = real_client_info()
    return info, f"client {describe_client(info)}"


# ---- broker flow commands (register, login): owned by flow.py's author ------------------------


def describe_registration(saved: dict[str, Any] | None) -> str:
    """One line naming a registration's directory, region, code and broker."""
    if not saved:
        return "nothing"
    d = saved.get("directory") or {}
    name = f"{d.get('name')} ({d.get('region')})" if d.get("name") else "a directory"
    return f"{name}, code {saved.get('registration_code')}, broker {saved.get('broker')}"


@main.command()
@click.argument("code")
@click.option("--broker", "broker_addr", required=True, help="Broker address HOST:PORT.")
@click.option("--cafile", type=click.Path(exists=True, dir_okay=False),
              help="Verify the broker against this CA instead of pinning its certificate.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to keep the registration (default ~/.config/smartcard-broker).")
@click.option("--change", is_flag=True,
              help="Change Registration Code: show the directory registered now and the new "
                   "one, and ask before replacing it.")
@click.option("--yes", "-y", "assume_yes", is_flag=True,
              help="Do not ask: trust the broker's certificate (without --cafile it is pinned "
                   "on first use: compare its fingerprint with your administrator's) and, with "
                   "--change, replace the registration.")
@as_client_option
def register(code: str, broker_addr: str, cafile: str | None, config_path: Path | None,
             change: bool, assume_yes: bool, as_client: str | None) -> None:
    """Register with a registration CODE: stores the code and the broker's TLS pin.

    Without --cafile the broker's certificate is pinned on first use: its SHA-256 fingerprint
    is shown and confirmed (or --yes). Exits 1 when the directory offers this client no login
    method at all, or the certificate is not confirmed."""
    from broker.client.flow import (
        BrokerApi,
        BrokerEndpoint,
        FlowError,
        LoginFlow,
        fetch_certificate_pin,
        load_registration,
        save_registration,
    )

    old: dict[str, Any] | None = None
    if change:
        try:
            old = load_registration(config_path)
        except FlowError:
            old = None  # nothing registered yet (or unreadable): a change is a first one
    client, said = client_identity(as_client)
    click.echo(said)
    try:
        ep = BrokerEndpoint.parse(broker_addr, cafile=cafile)
        if not cafile:
            ep.pin_sha256 = fetch_certificate_pin(ep.host, ep.port)
        reg = LoginFlow(BrokerApi(ep), code, cards=None, screens=None,  # type: ignore[arg-type]
                        client_info=client).register()
    except BrokerError as exc:
        fail(exc.message)
    reasons = ", ".join(reg["smart_card"].get("reasons", [])) or "not enabled"
    if not reg["login_methods"]:
        fail(f"{reg['directory']['name']} ({reg['region']}) offers this client no login "
             f"method (smart card: {reasons}); nothing was saved")
    if ep.pin_sha256 and not assume_yes:
        pin = ep.pin_sha256
        click.echo(f"the broker at {broker_addr} presents a certificate with SHA-256 fingerprint"
                   f"\n  {':'.join(pin[i:i + 2] for i in range(0, len(pin), 2)).upper()}\n"
                   "compare it with the one your administrator gave you (`broker doctor` "
                   "prints it on the tls line)", err=True)
        try:
            trusted = click.confirm("Trust this broker?", default=False, err=True)
        except click.Abort:
            trusted = False
        if not trusted:
            fail("not registered: the broker's certificate was not confirmed (pass --yes to "
                 "trust it, or --cafile to verify it against a CA)")
    new_dir = {"id": reg["directory"]["id"], "name": reg["directory"]["name"],
               "region": reg["region"]}
    if change:
        click.echo(f"registered now: {describe_registration(old)}")
        new = {"directory": new_dir, "registration_code": code, "broker": broker_addr}
        click.echo(f"new:            {describe_registration(new)}")
        if not assume_yes and not click.confirm("Replace the registration?", default=False):
            fail("registration not changed", code=1)
    path = save_registration(broker_addr, code, ep.pin_sha256, cafile, config_path, as_client,
                             new_dir)
    click.echo(f"registered with {reg['directory']['name']} ({reg['region']}); "
               f"login methods: {', '.join(reg['login_methods'])}")
    if "smart_card" not in reg["login_methods"]:
        click.echo(f"smart-card login is not offered here: {reasons}")
    if reg["smart_card"].get("in_session"):
        click.echo("in-session smart-card use (sudo, browsers): allowed in WSP sessions")
    else:
        inside = ", ".join(reg["smart_card"].get("in_session_reasons", [])) or "not enabled"
        click.echo(f"in-session smart-card use (sudo, browsers): not for this client's "
                   f"sessions ({inside})")
    if ep.pin_sha256:
        click.echo(f"broker certificate pinned: sha256 {ep.pin_sha256}")
    click.echo(f"saved to {path}")


@main.command()
@click.option("--reader", help="Use this PC/SC reader.")
@click.option("--pin-stdin", is_flag=True, help="Read the PIN(s) from standard input.")
@click.option("--cert", "cert_slot", help="Certificate slot to use, e.g. 9a.")
@click.option("--username", help="Log in with the directory's password login as this user "
                                 "(where smart-card login is not offered, e.g. outside "
                                 "GovCloud); the password is asked, or read with "
                                 "--password-stdin.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--workspace", "workspace_id", help="WorkSpace to connect to.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The registration to use (default ~/.config/smartcard-broker/client.json).")
@click.option("--json", "as_json", is_flag=True, help="Print the session as JSON.")
@click.option("--hold", is_flag=True,
              help="Stay connected: send heartbeats reporting whether the card is still in "
                   "the reader, and follow the broker's lock/disconnect answers.")
@click.option("--heartbeat-interval", type=click.FloatRange(0.2, 300), default=15.0,
              show_default=True, help="Seconds between heartbeats with --hold.")
@click.option("--session-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the session for in-session use (pam-auth) to this file (JSON, mode "
                   "0600); with --hold it is marked ended when the session ends.")
@strict_card_types_option
@as_client_option
def login(reader: str | None, pin_stdin: bool, cert_slot: str | None, username: str | None,
          password_stdin: bool, workspace_id: str | None, config_path: Path | None,
          as_json: bool, hold: bool, heartbeat_interval: float, session_file: Path | None,
          strict_card_types: bool, as_client: str | None) -> None:
    """Log in (smart card, or password with --username) and connect to a WorkSpace."""
    from broker.client.access import PcscCards
    from broker.client.flow import BrokerApi, BrokerEndpoint, LoginFlow, load_registration

    if pin_stdin and password_stdin:
        raise click.UsageError("--pin-stdin and --password-stdin both read standard input")
    if (pin_stdin or password_stdin) and workspace_id is None:
        # The picker would read its answer from the same standard input as the PIN.
        raise click.UsageError("--pin-stdin and --password-stdin need --workspace ID: the "
                               "WorkSpace cannot be chosen at a prompt when standard input "
                               "holds the PIN or password")
    saved = load_registration(config_path)
    if session_file:
        from broker.client.session_file import check_location

        check_location(session_file)  # refuse before a session is opened, not after
    client, said = client_identity(as_client, saved)
    click.echo(said, err=True)
    ep = BrokerEndpoint.parse(saved["broker"], cafile=saved.get("cafile"),
                              pin_sha256=saved.get("tls_pin_sha256"))
    cards = PcscCards(reader, strict_card_types, warn)
    flow = LoginFlow(BrokerApi(ep), saved["registration_code"], cards,
                     TerminalScreens(pin_stdin, cert_slot), client_info=client)
    result = None
    try:
        if username:
            password = (sys.stdin.readline().rstrip("\n") if password_stdin
                        else str(click.prompt("Password", hide_input=True, err=True)))
            result = flow.password_login(username, password)
        else:
            result = flow.login()
        session = flow.connect(result, workspace_id)
        if session_file:
            write_session_file(session_file, flow, saved, result, session)
    except BrokerError as exc:
        login_failed(exc)
    finally:
        if result is not None:
            result.close()
    if as_json:
        click.echo(json.dumps(session, indent=2))
    else:
        click.echo(f"session {session['id']} on {session['workspace_id']} via "
                   f"{session['gateway']['host']}:{session['gateway']['port']} "
                   f"({session['gateway']['protocol']}), expires {session['expires_at']}")
    if session_file:
        click.echo(f"session file: {session_file}", err=True)
    if hold:
        hold_session(flow, session, reader, heartbeat_interval, session_file)


#: The reference's advice when sign-in fails, printed after the code and the sentence.
SIGN_IN_ADVICE = ("If you're unable to sign in, close and reopen the client (run "
                  "`broker-client login` again), and then try again. After trying again, if you "
                  "still aren't able to sign in, contact your WorkSpaces administrator for help.")


def login_failed(exc: BrokerError) -> NoReturn:
    """A failed sign-in: ``error: CODE: sentence``, then the reference's advice; exit 1."""
    click.echo(f"error: {exc.code}: {exc.message}", err=True)
    click.echo(SIGN_IN_ADVICE, err=True)
    sys.exit(1)


def write_session_file(path: Path, flow: Any, saved: dict[str, Any], result: Any,
                       session: dict[str, Any]) -> None:
    """The session for pam-auth; the issuer comes from the ticket verified with the JWKS."""
    from broker.client import session_file
    from broker.client.pam import ticket_issuer

    _, jwks = flow.api.call("GET", "/v1/jwks.json")
    issuer = ticket_issuer(session["ticket"], jwks)
    if issuer is None:
        fail("the session ticket does not verify with the broker's JWKS; no session file "
             "written")
    address = f"https://{flow.api.endpoint.host}:{flow.api.endpoint.port}"
    session_file.write_active(
        path, broker=address, ca_file=saved.get("cafile"),
        pin_sha256=saved.get("tls_pin_sha256"), issuer=issuer, session=session,
        auth_token=result.auth_token, user=result.user["username"],
        directory=result.user.get("directory_id"), auth_method=result.method,
        certificate_sha256=result.certificate_sha256)


#: Why the broker ended a held session (heartbeat ``reason``), in a card user's words.
ENDED_BECAUSE = {
    "admin": "an administrator ended it",
    "card_removed": "the card was removed",
}


def hold_session(flow: Any, session: dict[str, Any], reader: str | None,
                 interval: float, session_path: Path | None = None) -> None:
    """Heartbeat until the broker says disconnect (or Ctrl-C / SIGTERM, which end the
    session); the session file is then marked ended."""
    import signal
    import time

    from broker.client import session_file, transport

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    last: str | None = None  # the first answer is shown too: the session is being held
    reason = "client_exit"
    present = True
    stack_lost_at: float | None = None
    # pcscd restarting is not a card removal: keep the last known presence until the card is
    # seen again or `grace` runs out; each card_count opens a fresh PC/SC context, so a pcscd
    # that comes back is used again (its readers need a moment to see the card once more).
    grace = max(10.0, 3 * interval)
    try:
        while True:
            try:
                count = transport.card_count(reader)
                if stack_lost_at is None:
                    present = count > 0
                elif count > 0 or time.monotonic() - stack_lost_at > grace:
                    click.echo("heartbeat: the PC/SC service is back", err=True)
                    stack_lost_at = None
                    present = count > 0
            except BrokerError:
                if transport.service_available():
                    present = False  # the service answers: the reader or card is gone
                elif stack_lost_at is None:
                    stack_lost_at = time.monotonic()
                    click.echo("heartbeat: the PC/SC service (pcscd) is not answering; "
                               f"waiting up to {grace:g} s for it", err=True)
                elif time.monotonic() - stack_lost_at > grace:
                    reason = "pcscd_gone"
                    try:
                        flow.end_session(session)
                    except BrokerError:
                        pass  # the session ends by missed heartbeats anyway
                    fail(f"the PC/SC service (pcscd) stopped answering for {grace:g} s: the "
                         "card cannot be checked, so the session was ended")
            try:
                action = flow.heartbeat(session, present)
            except BrokerError as exc:
                reason = exc.code
                fail(f"session ended: {exc.message}")
            if action != last:
                click.echo(f"heartbeat: card {'present' if present else 'removed'} → {action}",
                           err=True)
                last = action
            if action == "disconnect":
                why = getattr(flow, "last_end_reason", None)
                if why is None:  # the card was removed where removal disconnects
                    reason = "card_removed"
                    click.echo("disconnected: the card was removed", err=True)
                    return
                reason = why
                fail(f"session ended by the broker: {ENDED_BECAUSE.get(why, why)} ({why})")
            time.sleep(interval)
    except KeyboardInterrupt:
        reason = "client"
        try:
            flow.end_session(session)
        except BrokerError as exc:
            click.echo(f"error: ending the session: {exc.message}", err=True)
        click.echo("session ended", err=True)
    finally:
        if session_path:
            session_file.mark_ended(session_path, reason)


@main.command("nss-setup")
@click.option("--dbdir", type=click.Path(file_okay=False, path_type=Path),
              help="NSS database folder (default ~/.pki/nssdb).")
@click.option("--module", "module_path", help="Path of opensc-pkcs11.so (default: found).")
@click.option("--firefox-policy", type=click.Path(dir_okay=False, path_type=Path),
              help="Also merge a Firefox enterprise policy (SecurityDevices) into this file.")
@click.option("--firefox", is_flag=True,
              help="Also register the module in every Firefox profile (found from "
                   "~/.mozilla/firefox/profiles.ini): Firefox on Linux has its own NSS "
                   "database per profile.")
@click.option("--force", is_flag=True,
              help="Change a database even while a browser holds it open (it may not see "
                   "the change until restarted, or may overwrite it).")
def nss_setup(dbdir: Path | None, module_path: str | None,
              firefox_policy: Path | None, firefox: bool, force: bool) -> None:
    """Register OpenSC's PKCS#11 module in the NSS database (Chrome, Firefox in-session).

    As the WorkSpaces guide says, close Chrome (and Firefox) first: a database a process
    holds open is refused unless --force."""
    from broker.client import nss

    module = module_path or nss.find_opensc_module()
    databases = [dbdir or nss.default_dbdir()]
    if firefox:
        profiles = nss.firefox_profiles()
        if not profiles:
            click.echo("no Firefox profile found (~/.mozilla/firefox/profiles.ini)", err=True)
        databases += profiles
    try:
        for db in databases:  # refuse before changing any of them
            if not force:
                nss.refuse_if_in_use(db.expanduser())
    except nss.NssSetupError as exc:
        fail(f"{exc.code}: {exc.message}")
    for db in databases:
        click.echo(nss.register_opensc(db, module))
    if firefox_policy:
        nss.write_firefox_policy(firefox_policy, module)
        click.echo(f"Firefox policy written to {firefox_policy}")


def _mount_subcommands() -> None:
    """The card and PAM commands live in their own modules, ``card-sim`` beside the simulator
    (a broken import is an error, not a missing command)."""
    from broker.cardsim.cli import card_sim
    from broker.client.cli_card import card
    from broker.client.cli_pam import pam_auth, pam_setup

    main.add_command(card, "card")
    main.add_command(pam_auth, "pam-auth")
    main.add_command(pam_setup, "pam-setup")
    main.add_command(card_sim, "card-sim")


_mount_subcommands()


if __name__ == "__main__":
    main()
