"""sudo through real PAM: pamtester → pam_exec → broker-client pam-auth → pcscd + vpcd + the
virtual PIV card → a running broker, with the PAM service file written by pam-setup.

The service file lives in /etc/pam.d (libpam reads nowhere else) under a name of its own and is
removed afterwards. pam-setup's ``--log`` makes pam_exec append pam-auth's one-line verdicts to
a file, which the tests read where syslog would be on a real desktop.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from broker.cardsim import PivCard
from tests.support.pcsc import vpcd_cards

pytestmark = [pytest.mark.pcsc, pytest.mark.slow]

CLI = [sys.executable, "-m", "broker.client.cli"]
PAM_DIR = Path("/etc/pam.d")


def pam_problem() -> str | None:
    if shutil.which("pamtester") is None:
        return "pamtester is not installed (apt-get install pamtester)"
    if os.geteuid() != 0:
        return "writing a PAM service to /etc/pam.d needs root"
    return None


@dataclass
class Desktop:
    """One user's desktop session: registration, held login, session file, PAM service."""

    broker: Any
    tmp: Path
    service: str
    log: Path
    session_file: Path
    login: subprocess.Popen[str] | None = None
    session_id: str = ""

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(CLI + list(args), capture_output=True, text=True, input=stdin,
                              timeout=60)

    def log_in(self, code: str, username: str, password: str, workspace: str,
               heartbeat_s: float = 1.0) -> None:
        cfg = self.tmp / f"{username}.client.json"
        reg = self.cli("register", code, "--broker", f"127.0.0.1:{self.broker.port}",
                       "--cafile", str(self.broker.cafile), "--config", str(cfg))
        assert reg.returncode == 0, reg.stderr
        self.login = subprocess.Popen(
            CLI + ["login", "--config", str(cfg), "--username", username, "--password-stdin",
                   "--workspace", workspace, "--session-file", str(self.session_file),
                   "--hold", "--heartbeat-interval", str(heartbeat_s), "--json"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.login.stdin is not None and self.login.stdout is not None
        self.login.stdin.write(password + "\n")
        self.login.stdin.close()
        out = ""
        while not out.rstrip().endswith("}"):
            line = self.login.stdout.readline()
            assert line, self.login.stderr.read() if self.login.stderr else "login died"
            out += line
        self.session_id = json.loads(out)["id"]
        setup = self.cli("pam-setup", "--service", self.service, "--config", str(cfg),
                         "--session-file", str(self.session_file), "--log", str(self.log))
        assert setup.returncode == 0, setup.stderr

    def sudo(self, user: str, pin: str) -> tuple[bool, str, float]:
        """pamtester authenticate: (succeeded, pam-auth's verdict line, seconds taken)."""
        before = self.log.read_text() if self.log.exists() else ""
        started = time.monotonic()
        out = subprocess.run(["pamtester", "-v", self.service, user, "authenticate"],
                             input=pin + "\n", capture_output=True, text=True, timeout=60)
        took = time.monotonic() - started
        after = self.log.read_text() if self.log.exists() else ""
        verdicts = [ln for ln in after[len(before):].splitlines() if ln.startswith("pam-auth:")]
        assert len(verdicts) == 1, (verdicts, out.stdout, out.stderr)
        assert pin not in verdicts[0] and self.session_id not in verdicts[0]
        return out.returncode == 0, verdicts[0], took

    def end(self) -> str:
        """Stop the held login (it ends the session); its stderr."""
        if self.login is None:
            return ""
        if self.login.poll() is None:
            self.login.terminate()
            self.login.wait(30)
        return self.login.stderr.read() if self.login.stderr else ""


@pytest.fixture
def desktop(broker_factory: Any, tmp_path: Path) -> Iterator[tuple[Desktop, Any]]:
    problem = pam_problem()
    if problem:
        pytest.skip(problem)
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
            subprocess.run(CLI + ["pam-setup", "--service", service, "--remove"],
                           capture_output=True, timeout=60)
            for leftover in PAM_DIR.glob(f"{service}*"):
                leftover.unlink()


def audit(bp: Any) -> list[dict[str, Any]]:
    out = bp.run_cli("admin", "audit", "list", "--json", "--kind", "in_session.*",
                     "--limit", "100")
    data = json.loads(out.stdout)
    return data["items"] if isinstance(data, dict) else data


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
