"""What an operator does first: build a wheel, install it outside the checkout, and from another
folder migrate → admin apply → serve → one full smart-card login → /readyz.

The wheel is built from a copy of the tracked source files (nothing is written into the
checkout) and installed with ``--no-deps`` into a fresh virtualenv; the third-party dependencies
come from the test virtualenv through a .pth line so the test needs no network and stays within
a couple of minutes. The test asserts that ``broker`` itself is imported from the fresh
virtualenv, so the shipped catalogue, config and migrations are the wheel's own.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import REPO, ApiClient, free_port
from tests.support.softcard import SoftClient
from tests.support.world import build_world

pytestmark = pytest.mark.install


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv (outside the checkout) with the wheel installed; its bin folder."""
    work = tmp_path_factory.mktemp("install")
    src = work / "src"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file() and not name.startswith(("tests/", "bench/")):
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    # The build backend comes from the test extra (setuptools, wheel): no index needed here.
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(work / "dist"), str(src)], cwd=work)
    wheel = next((work / "dist").glob("smartcard_broker-*.whl"))
    venv = work / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=work)
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    target = venv / "lib" / pyver / "site-packages"
    run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)], cwd=work)
    # Dependencies from the test virtualenv, after the fresh site-packages on sys.path.
    (target / "zz-test-dependencies.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n")
    # Entry points: pip --target does not write scripts for the venv; make the two an
    # installer would.
    for name, module in (("broker", "broker.cli"), ("broker-client", "broker.client.cli")):
        script = venv / "bin" / name
        script.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom {module} import main\n"
                          "sys.exit(main())\n")
        script.chmod(0o755)
    return venv / "bin"


class Installed:
    """Runs the installed `broker` from an operator's folder (what build_world needs)."""

    def __init__(self, bin_dir: Path, cwd: Path, config: Path) -> None:
        self.bin_dir, self.cwd, self.config = bin_dir, cwd, config

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("BROKER_", "PYTHON", "VIRTUAL_ENV"))}
        env["BROKER_CONFIG"] = str(self.config)  # found the way an operator would set it
        env["PATH"] = f"{self.bin_dir}:{env.get('PATH', '')}"
        return env

    def run_cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.bin_dir / "broker"), *args], cwd=self.cwd,
                              env=self.env(), capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"broker {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc


@pytest.fixture
def operator(installed: Path, tmp_path: Path) -> Iterator[tuple[Installed, int, int, Path]]:
    from broker.web.server import dev_certificate

    etc = tmp_path / "etc" / "smartcard-broker"
    tls = dev_certificate(etc / "tls")  # stands in for the operator's real certificate
    port, admin_port = free_port(), free_port()
    config = etc / "broker.toml"
    config.write_text(
        f'[server]\nlisten = "tcp:{port}:interface=127.0.0.1"\n'
        f'admin_listen = "tcp:{admin_port}:interface=127.0.0.1"\n'
        f'tls_cert = "tls/{tls.cert.name}"\ntls_key = "tls/{tls.key.name}"\n'
        'state_dir = "state"\nshutdown_grace_s = 2.0\n')
    elsewhere = tmp_path / "srv"
    elsewhere.mkdir()
    yield Installed(installed, elsewhere, config), port, admin_port, tls.cert


def wait_healthy(api: ApiClient, proc: subprocess.Popen[Any], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "broker serve exited:\n" + log.read_text()
        try:
            if api.get("/healthz").status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("broker serve did not become healthy:\n" + log.read_text())


def test_installed_wheel_runs_from_another_folder(operator, installed: Path) -> None:  # type: ignore[no-untyped-def]
    broker, port, admin_port, cafile = operator
    where = broker.run_cli("--version")
    assert "0.1.0" in where.stdout
    imported = subprocess.run([str(installed / "python"), "-c",
                               "import broker; print(broker.__file__)"], cwd=broker.cwd,
                              capture_output=True, text=True, check=True).stdout
    assert str(installed.parent) in imported, imported

    out = broker.run_cli("migrate")
    from broker.store import migrate

    assert f"migrated 0000 → {migrate.head_revision()}" in out.stdout, out.stdout
    assert out.stderr == "", "no SQLAlchemy reflection warnings"
    assert (broker.config.parent / "state" / "broker.db").is_file()
    assert list(broker.cwd.iterdir()) == [], "migrate wrote into the current folder"

    world = build_world(broker.cwd.parent / "world", broker)
    log = broker.cwd.parent / "serve.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(installed / "broker"), "serve"], cwd=broker.cwd,
                                env=broker.env(), stdout=fh, stderr=subprocess.STDOUT)
    try:
        client = ApiClient("127.0.0.1", port, cafile)
        wait_healthy(client, proc, log)
        soft = SoftClient(client, world.codes["corp"])
        reg = soft.register()
        assert reg.status == 200 and "smart_card" in reg.body["login_methods"], reg.body
        login = soft.login(world.cards["bob"])
        assert login.status == 200, login.body
        token = login.body["auth_token"]
        ws = next(w for w in login.body["workspaces"] if w["protocol"] == "WSP")
        connected = soft.open_session(token, ws["id"], world.cards["bob"])
        assert connected.status == 201 and connected.body["session"]["ticket"], connected.body
        ready = ApiClient("127.0.0.1", admin_port, cafile).get("/readyz")
        assert ready.status == 200 and ready.body["status"] == "ok", ready.body
    finally:
        proc.terminate()
        proc.wait(20)
    assert proc.returncode == 0, log.read_text()
    assert list(broker.cwd.iterdir()) == [], "serve wrote into the current folder"


def test_installed_demo_runs_from_another_folder(operator) -> None:  # type: ignore[no-untyped-def]
    broker, *_ = operator
    out = broker.run_cli("demo", "--card", "in-process", "--start-delay", "1")
    assert "demo finished" in out.stdout, out.stdout + out.stderr
    assert list(broker.cwd.iterdir()) == [], "demo wrote into the current folder"
    assert (broker.config.parent / "state" / "demo" / "demo.toml").is_file()
    # Whatever the operator's umask, the demo's database and keys are the operator's own.
    made = [broker.config.parent / "state" / "demo", *(
        broker.config.parent / "state" / "demo").rglob("*")]
    loose = [str(p) for p in made if p.stat().st_mode & 0o077]
    assert loose == []
