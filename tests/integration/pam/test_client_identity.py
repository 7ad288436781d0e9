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
