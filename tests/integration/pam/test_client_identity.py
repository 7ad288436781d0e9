"""broker-client tells the broker what it really is, unless told to present itself as another
client; a registration that offers no login method is a refusal."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tests.support.pam import CLI


def register(bp: Any, code: str, cfg: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + ["register", code, "--broker", f"127.0.0.1:{bp.port}",
                                 "--cafile", str(bp.cafile), "--config", str(cfg), *extra],
                          capture_output=True, text=True, timeout=60)


def test_a_linux_client_gets_password_only_in_govcloud(broker: Any, world: Any,
                                                       tmp_path: Path) -> None:
    out = register(broker, world.codes["corp"], tmp_path / "c.json")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("client linux/")
    assert "login methods: password" in out.stdout
    assert "client_platform_unsupported" in out.stdout


def test_as_client_presents_the_windows_client_and_says_so(broker: Any, world: Any,
                                                           tmp_path: Path) -> None:
    out = register(broker, world.codes["corp"], tmp_path / "c.json", "--as-client",
                   "windows/x86_64/3.1.1")
    assert out.returncode == 0, out.stderr
    assert "presenting as client windows/x86_64/3.1.1 (--as-client)" in out.stdout
    assert "login methods: smart_card, password" in out.stdout


def test_register_without_any_login_method_exits_non_zero(broker: Any, world: Any,
                                                          tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    out = register(broker, world.codes["other"], cfg)
    assert out.returncode == 1
    assert out.stderr.strip().startswith("error: Other Agency (us-gov-west-1) offers this "
                                         "client no login method")
    assert "Traceback" not in out.stderr and not cfg.exists()


def test_a_linux_client_is_told_its_sessions_get_no_in_session_use(broker: Any, world: Any,
                                                                   tmp_path: Path) -> None:
    """Only the Windows client redirects the card into the WorkSpace (DESIGN §1)."""
    out = register(broker, world.codes["east"], tmp_path / "c.json")
    assert out.returncode == 0, out.stderr
    assert ("in-session smart-card use (sudo, browsers): not for this client's sessions "
            "(client_platform_unsupported") in out.stdout
    windows = register(broker, world.codes["east"], tmp_path / "w.json", "--as-client",
                       "windows/x86_64/3.1.1")
    assert "in-session smart-card use (sudo, browsers): allowed in WSP sessions" in \
        windows.stdout


def test_change_registration_code_shows_both_directories_and_asks(broker: Any, world: Any,
                                                                  tmp_path: Path) -> None:
    """The reference's "Change Registration Code": the old and the new directory, a question;
    no replaces nothing, --yes replaces without asking."""
    import json

    cfg = tmp_path / "c.json"
    assert register(broker, world.codes["corp"], cfg).returncode == 0
    before = cfg.read_text()
    said_no = subprocess.run(
        CLI + ["register", world.codes["east"], "--broker", f"127.0.0.1:{broker.port}",
               "--cafile", str(broker.cafile), "--config", str(cfg), "--change"],
        input="n\n", capture_output=True, text=True, timeout=60)
    assert said_no.returncode == 1 and "registration not changed" in said_no.stderr
    assert f"registered now: Corp GovCloud (us-gov-west-1), code {world.codes['corp']}" in \
        said_no.stdout
    assert f"new:            Corp East (us-east-1), code {world.codes['east']}" in said_no.stdout
    assert "Replace the registration?" in said_no.stdout
    assert cfg.read_text() == before
    said_yes = register(broker, world.codes["east"], cfg, "--change", "--yes")
    assert said_yes.returncode == 0, said_yes.stderr
    saved = json.loads(cfg.read_text())
    assert saved["registration_code"] == world.codes["east"]
    assert saved["directory"] == {"id": "east", "name": "Corp East", "region": "us-east-1"}


def test_a_failed_login_prints_code_sentence_and_the_references_advice(
        broker: Any, world: Any, tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    assert register(broker, world.codes["east"], cfg).returncode == 0
    out = subprocess.run(CLI + ["login", "--config", str(cfg), "--username", "erin",
                                "--password-stdin", "--workspace", "ws-erin"],
                         input="wrong password\n", capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[-2] == "error: invalid_credentials: The user name or password is wrong."
    assert lines[-1].startswith("If you're unable to sign in, close and reopen the client")
    assert lines[-1].endswith("contact your WorkSpaces administrator for help.")
    assert "wrong password" not in out.stderr and "Traceback" not in out.stderr
