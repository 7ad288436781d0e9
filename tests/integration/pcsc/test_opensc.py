"""OpenSC, an outside implementation, accepts the simulated PIV card as a real one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from broker.cardsim import PivCard
from broker.client.nss import find_opensc_module
from broker.pki import issue
from tests.support.pcsc import vpcd_cards
from tests.support.require import unavailable

pytestmark = pytest.mark.pcsc


@pytest.fixture(autouse=True)
def need_opensc() -> None:
    if shutil.which("pkcs15-tool") is None or shutil.which("pkcs11-tool") is None:
        unavailable("opensc", "OpenSC tools are not installed (apt-get install opensc)")


def run(*cmd: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, capture_output=True, timeout=120, input=input)


def test_opensc_tool_and_pkcs15_tool_list_the_card() -> None:
    p = issue.make_demo_pki()
    with vpcd_cards(PivCard(key=p.user.key, certificate=p.user.cert)):
        atr = run("opensc-tool", "-a")
        assert atr.returncode == 0 and b"3b:f8:13" in atr.stdout
        dump = run("pkcs15-tool", "-D").stdout.decode()
        assert "piv_II" in dump and "PIV AUTH key" in dump and "PIV PUK" in dump
        assert "Certificate Object" in dump or "X.509 Certificate" in dump


def test_pkcs11_tool_signs_with_the_pin_and_the_signature_verifies(tmp_path: Path) -> None:
    p = issue.make_demo_pki()
    module = find_opensc_module()
    with vpcd_cards(PivCard(key=p.user.key, certificate=p.user.cert)):
        listing = run("pkcs11-tool", "--module", module, "-L").stdout.decode()
        assert "Virtual PCD" in listing
        objects = run("pkcs11-tool", "--module", module, "-O").stdout.decode()
        assert "Certificate Object" in objects
        data = tmp_path / "data"
        data.write_bytes(b"signed by the virtual card through OpenSC")
        sig = tmp_path / "sig"
        proc = run("pkcs11-tool", "--module", module, "--login", "--pin", "123456", "--sign",
                   "-m", "ECDSA-SHA256", "--id", "01", "--signature-format", "openssl",
                   "-i", str(data), "-o", str(sig))
        assert proc.returncode == 0, proc.stderr
        p.user.cert.public_key().verify(sig.read_bytes(), data.read_bytes(),
                                        ec.ECDSA(hashes.SHA256()))


def test_nss_setup_registers_opensc_in_a_real_nss_database(tmp_path: Path) -> None:
    import subprocess as sp
    import sys

    if shutil.which("modutil") is None:
        unavailable("nss", "NSS tools are not installed (apt-get install libnss3-tools)")
    db = tmp_path / "nssdb"
    policy = tmp_path / "policies.json"
    policy.write_text('{"policies": {"DisableTelemetry": true}}')
    cmd = [sys.executable, "-m", "broker.client.cli", "nss-setup", "--dbdir", str(db),
           "--firefox-policy", str(policy)]
    first = sp.run(cmd, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0 and "added" in first.stdout, first.stderr
    second = sp.run(cmd, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and "already" in second.stdout
    listing = sp.run(["modutil", "-dbdir", f"sql:{db}", "-list"], capture_output=True,
                     text=True, timeout=60).stdout
    assert "OpenSC" in listing
    import json

    data = json.loads(policy.read_text())
    assert data["policies"]["DisableTelemetry"] is True
    assert data["policies"]["SecurityDevices"]["Add"]["OpenSC"].endswith("opensc-pkcs11.so")
