"""`broker-client pam-auth` and `pam-setup`: in-session sudo through PAM."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import NoReturn

import click

from broker.client.cli_util import fail
from broker.errors import BrokerError

_SAFE_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@-]{0,63}")


@click.command("pam-auth")
@click.option("--session-file", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The session file `login --session-file` wrote; %u stands for PAM_USER.")
@click.option("--purpose", default="sudo", show_default=True,
              type=click.Choice(["sudo", "browser", "other"]),
              help="What the assertion is for (audited by the broker).")
@click.option("--broker", "broker_addr", metavar="HOST:PORT",
              help="The broker whose assertion decides (pam-setup writes it from the "
                   "registration); the session file must name the same one.")
@click.option("--cafile", type=click.Path(dir_okay=False),
              help="Verify that broker's TLS certificate against this CA.")
@click.option("--pin-sha256", help="…or pin its TLS certificate by SHA-256.")
@click.option("--issuer", help="Require this assertion issuer (the broker id).")
@click.option("--timeout", type=click.FloatRange(0.5, 60), default=5.0, show_default=True,
              help="Seconds per broker call; an unreachable broker is a refusal after it.")
@click.option("--reader", help="Use this PC/SC reader.")
@click.option("--strict-card-types", is_flag=True,
              help="Refuse a card that is neither PIV nor CAC instead of using it through its "
                   "PKCS#11 module.")
def pam_auth(session_file: Path, purpose: str, broker_addr: str | None, cafile: str | None,
             pin_sha256: str | None, issuer: str | None, timeout: float,
             reader: str | None, strict_card_types: bool) -> None:
    """Authenticate PAM_USER with the smart card, as decided by the broker (for
    pam_exec.so expose_authtok; the PIN comes on standard input).

    \b
    Set-up, in the order an administrator does it:
     1. Register the machine's client with the broker, as root:
          broker-client register CODE --broker HOST:PORT [--cafile CA.pem]
     2. Write the PAM rule for sudo and sudo -i (backs up what it changes):
          broker-client pam-setup --session-file /run/smartcard-broker/%u.json --dry-run
          broker-client pam-setup --session-file …   (then again without --dry-run)
     3. Each user logs in with the session file, and keeps the session held:
          broker-client login --username NAME --session-file FILE --hold
     4. `sudo` now asks for the card's PIN; the broker checks WSP, region, directory
        and the session, audits the decision with purpose sudo, and signs an assertion
        this command verifies (JWKS: issuer, audience, user, purpose, expiry).
     5. Undo with: broker-client pam-setup --remove

    Exit 0 only when the assertion verifies for PAM_USER. Any refusal exits 1 with one
    line on stderr and in syslog (authpriv), never with the PIN, token or challenge.
    """
    import os
    import syslog

    from broker.client.access import PcscCards
    from broker.client.pam import PamRequest, authenticate, read_authtok, short_id

    pam_user = os.environ.get("PAM_USER", "")
    pam_type = os.environ.get("PAM_TYPE", "auth")
    syslog.openlog("broker-client-pam", syslog.LOG_PID, syslog.LOG_AUTHPRIV)

    def say(priority: int, line: str) -> None:
        syslog.syslog(priority, line)
        click.echo(line, err=True)

    def refuse(code: str, message: str) -> NoReturn:
        say(syslog.LOG_NOTICE, f"pam-auth: refused user={pam_user or '-'} purpose={purpose} "
                               f"reason={code}: {message}")
        sys.exit(1)

    if pam_type != "auth":
        refuse("unsupported_pam_type", "only the auth type is handled")
    pin = read_authtok(sys.stdin.buffer.read(512)) if not sys.stdin.isatty() else ""
    if "%u" in str(session_file):  # one file per user: %u is PAM_USER, as in sshd_config
        if not pam_user or not _SAFE_USER.fullmatch(pam_user):
            refuse("user_mismatch", "PAM_USER cannot name a session file")
        session_file = Path(str(session_file).replace("%u", pam_user))
    req = PamRequest(session_file, purpose, broker_addr, cafile, pin_sha256, issuer, timeout)
    try:
        granted = authenticate(req, pam_user, pin, PcscCards(
            reader, strict_card_types, lambda line: say(syslog.LOG_WARNING, f"pam-auth: {line}")))
    except BrokerError as exc:  # a Refusal, or e.g. a malformed broker address: same line
        refuse(exc.code, exc.message)
    say(syslog.LOG_INFO, f"pam-auth: granted user={granted.user} purpose={granted.purpose} "
                         f"session={short_id(granted.session_id)}")


@click.command("pam-setup")
@click.option("--service", "services", multiple=True, metavar="NAME",
              help="PAM service to configure (repeatable) [default: sudo and sudo-i].")
@click.option("--session-file", help="Session file path to embed in the pam-auth line.")
@click.option("--purpose", default="sudo", show_default=True,
              type=click.Choice(["sudo", "browser", "other"]))
@click.option("--broker", "broker_addr", metavar="HOST:PORT",
              help="The broker pam-auth trusts [default: from the registration].")
@click.option("--cafile", type=click.Path(exists=True, dir_okay=False),
              help="CA for that broker's TLS certificate [default: from the registration].")
@click.option("--pin-sha256", help="Or its certificate's SHA-256 [default: registration].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The registration to take the broker from.")
@click.option("--control", type=click.Choice(["sufficient", "required", "requisite"]),
              default="sufficient", show_default=True,
              help="sufficient: a refused card falls back to the password; required: the card "
                   "is the only way.")
@click.option("--program", help="Path of broker-client in the PAM line [default: this one].")
@click.option("--log", "log_file", help="Also append pam-auth's lines to this file (pam_exec "
                                        "log=; syslog gets them either way); an absolute path "
                                        "in a folder no other user may write.")
@click.option("--pam-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("/etc/pam.d"), show_default=True, help="Where the service files are.")
@click.option("--stack", type=click.Choice(["debian", "rhel"]),
              help="The distribution's PAM layout: debian (common-auth) or rhel (system-auth, "
                   "password-auth, authselect) [default: from what is in --pam-dir].")
@click.option("--strict-card-types", is_flag=True,
              help="Write pam-auth's --strict-card-types into the rule: only PIV and CAC cards.")
@click.option("--dry-run", is_flag=True, help="Show the change as a diff; write nothing.")
@click.option("--remove", is_flag=True, help="Take the pam-auth rule out again.")
def pam_setup(services: tuple[str, ...], session_file: str | None, purpose: str,
              broker_addr: str | None, cafile: str | None, pin_sha256: str | None,
              config_path: Path | None, control: str, program: str | None,
              log_file: str | None, pam_dir: Path, stack: str | None,
              strict_card_types: bool, dry_run: bool, remove: bool) -> None:
    """Write (or --remove) the pam_exec rule that runs pam-auth for sudo and sudo -i.

    Idempotent; the original file is kept as SERVICE.smartcard-broker.bak before the first
    change. See `broker-client pam-auth --help` for the whole set-up."""
    import shutil

    from broker.client import pam_setup as ps
    from broker.client.flow import load_registration

    line = None
    if not remove:
        if broker_addr is None:
            saved = load_registration(config_path)
            broker_addr = saved["broker"]
            cafile = cafile or saved.get("cafile")
            pin_sha256 = pin_sha256 or (None if cafile else saved.get("tls_pin_sha256"))
        if not (cafile or pin_sha256):
            fail("pam-auth must know how to trust the broker: give --cafile or --pin-sha256 "
                 "(or register with them)")
        exe = program or shutil.which("broker-client")
        beside = Path(sys.executable).parent / "broker-client"  # a virtualenv's, off PATH
        if exe is None and beside.exists():
            exe = str(beside)
        if exe is None:
            fail("cannot find the broker-client program for the PAM line; give --program PATH")
        if log_file:
            ps.check_log_path(log_file)
        line = ps.PamExecLine(str(Path(exe).absolute()), session_file,
                              purpose, broker_addr,
                              str(Path(cafile).resolve()) if cafile else None,
                              None if cafile else pin_sha256, control, log_file,
                              strict_card_types)
    layout = ps.Stack(stack) if stack else ps.detect_stack(pam_dir)
    click.echo(f"PAM layout: {layout.value}" + ("" if stack else " (detected)"))
    chosen = tuple(services or ps.DEFAULT_SERVICES)
    for service in chosen:
        change = ps.plan(pam_dir, service, line, layout, chosen)
        if dry_run:
            click.echo(ps.diff(change) or f"{change.path}: {change.action}")
            continue
        ps.apply(change)
        click.echo(f"{change.path}: {change.action}")
