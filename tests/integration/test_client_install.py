"""The client-only distribution, as a card user's machine gets it: build the
smartcard-broker-client wheel (packaging/client), install it into a fresh virtualenv with pip
(its dependencies from the package index), and run ``broker-client --help`` there. Neither
Twisted nor SQLAlchemy (nor the broker's server modules) may be installed or imported.

Needs the package index (pip resolves click, cryptography and joserfc into the new venv)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import REPO

pytestmark = pytest.mark.install

CHECK = """
import importlib.util, sys
import broker.client.cli, broker.client.flow, broker.client.pam, broker.cardsim.cli
for name in ("twisted", "sqlalchemy", "klein", "alembic", "pydantic", "broker.web",
             "broker.service", "broker.store", "broker.pki"):
    assert name not in sys.modules, name + " imported"
    try:
        found = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        found = None
    assert found is None, name + " installed"
print("client-only ok")
"""


#: The card user's environment: nothing of the test's (its PYTHONPATH names the checkout).
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def run(cmd: list[str], cwd: Path, timeout: float = 600) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=CLEAN_ENV)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n" \
                                 f"{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_client_only_install_runs_without_the_server_stack(tmp_path: Path) -> None:
    src = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files", "-z", "broker", "packaging", "setup.cfg"],
                             cwd=REPO, capture_output=True, check=True).stdout.decode()
    for name in filter(None, tracked.split("\0")):
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(src / "packaging" / "client")], cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("smartcard_broker_client-*.whl"))
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    bin_dir = venv / "bin"
    run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         str(wheel)], cwd=tmp_path)
    listed = run([str(bin_dir / "python"), "-m", "pip", "list", "--format=freeze"],
                 cwd=tmp_path).lower()
    for server_dist in ("twisted", "sqlalchemy", "klein", "alembic", "psycopg", "pydantic"):
        assert f"\n{server_dist}==" not in "\n" + listed, listed
    assert "smartcard-broker-client==" in listed
    helped = run([str(bin_dir / "broker-client"), "--help"], cwd=tmp_path)
    assert "Usage: broker-client" in helped and "login" in helped
    assert run([str(bin_dir / "python"), "-c", CHECK], cwd=tmp_path).strip() == \
        "client-only ok"
    # card-sim's demo issuer needs the server's PKI code: a usage error saying so, not a trace
    sim = subprocess.run([str(bin_dir / "broker-client"), "card-sim", "piv", "--out",
                          str(tmp_path / "demo")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, env=CLEAN_ENV)
    assert sim.returncode == 2 and "full smartcard-broker" in sim.stderr, sim.stderr
