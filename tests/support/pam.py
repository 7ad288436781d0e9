"""Real PAM for tests: a desktop session (registration, held login, session file) with a PAM
service written by ``broker-client pam-setup``, driven by Debian's pamtester.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
               heartbeat_s: float = 1.0, as_client: str = "windows/x86_64/3.1.1") -> None:
        """Log in as the user's WorkSpaces client would (by default the Windows client, the
        only one that redirects the card into the WorkSpace) and hold the session."""
        cfg = self.tmp / f"{username}.client.json"
        reg = self.cli("register", code, "--broker", f"127.0.0.1:{self.broker.port}",
                       "--cafile", str(self.broker.cafile), "--config", str(cfg),
                       "--as-client", as_client)
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
        # the first heartbeat's answer: from here on, the broker's changes reach the held login
        # only at the next heartbeat, so a test can end the session before the login knows
        assert self.login.stderr is not None
        while not (line := self.login.stderr.readline()).startswith("heartbeat:"):
            assert line, "the held login died before its first heartbeat"
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


def audit(bp: Any) -> list[dict[str, Any]]:
    out = bp.run_cli("admin", "audit", "list", "--json", "--kind", "in_session.*",
                     "--limit", "100")
    data = json.loads(out.stdout)
    return data["items"] if isinstance(data, dict) else data




def remove_service(service: str) -> None:
    """pam-setup --remove, then anything left of the service (backups) goes too."""
    subprocess.run(CLI + ["pam-setup", "--service", service, "--remove"], capture_output=True,
                   timeout=60)
    for leftover in PAM_DIR.glob(f"{service}*"):
        leftover.unlink()


PAM_PKCS11_CONF = """pam_pkcs11 {{
  nullok = false; debug = false; card_only = true; wait_for_card = false;
  use_first_pass = false; try_first_pass = false; use_authtok = false;
  use_pkcs11_module = opensc;
  pkcs11_module opensc {{
    module = {module};
    slot_description = "none";
    ca_dir = {ca_dir}; crl_dir = {crl_dir};
    support_threads = false;
    cert_policy = ca,signature,crl_offline;
  }}
  # The ms (UPN) mapper crashes pam_pkcs11 0.6.12 (SIGSEGV in pamtester) on these cards' UPN;
  # the cn mapper (CN = login name, case-insensitive) is what works.
  use_mappers = cn;
  mapper_search_path = /lib/x86_64-linux-gnu/pam_pkcs11;
  mapper cn {{ debug = false; module = internal; ignorecase = true; mapfile = "none"; }}
}}
"""


def pam_pkcs11_problem() -> str | None:
    if not Path("/lib/x86_64-linux-gnu/security/pam_pkcs11.so").exists():
        return "libpam-pkcs11 is not installed (apt-get install libpam-pkcs11)"
    if shutil.which("pkcs11_make_hash_link") is None:
        return "pkcs11_make_hash_link (libpam-pkcs11) is missing"
    return pam_problem()


@dataclass
class PamPkcs11:
    """Debian's pam_pkcs11 + OpenSC against the same CA (and CRL) as the broker: the peer."""

    base: Path
    service: str

    def configure(self, module: str, ca_pems: list[bytes], crl_pems: list[bytes]) -> None:
        ca_dir, crl_dir = self.base / "cacerts", self.base / "crls"
        for folder, pems in ((ca_dir, ca_pems), (crl_dir, crl_pems)):
            folder.mkdir(parents=True, exist_ok=True)
            for i, pem in enumerate(pems):
                (folder / f"{i}.pem").write_bytes(pem)
            subprocess.run(["pkcs11_make_hash_link"], cwd=folder, check=True,
                           capture_output=True)
        conf = self.base / "pam_pkcs11.conf"
        conf.write_text(PAM_PKCS11_CONF.format(module=module, ca_dir=ca_dir, crl_dir=crl_dir))
        (PAM_DIR / self.service).write_text(
            f"auth required pam_pkcs11.so config_file={conf}\naccount required pam_permit.so\n")

    def sudo(self, user: str, pin: str) -> tuple[bool, str]:
        out = subprocess.run(["pamtester", self.service, user, "authenticate"],
                             input=pin + "\n", capture_output=True, text=True, timeout=60)
        said = " ".join(ln.strip() for ln in (out.stdout + out.stderr).splitlines()
                        if "Error" in ln or "failure" in ln)
        return out.returncode == 0, said or ("crashed" if out.returncode < 0 else "")

    def remove(self) -> None:
        (PAM_DIR / self.service).unlink(missing_ok=True)
