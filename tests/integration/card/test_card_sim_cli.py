"""``card-sim`` as a process: demo PKI written out, the card in the reader, a clean stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from broker.cardsim.vpcd import REINSERT_GAP
from tests.integration.card.conftest import wait_for_card

pytestmark = pytest.mark.pcsc

RUN = "from broker.cardsim.cli import card_sim; card_sim()"


@pytest.mark.parametrize(("kind", "name"), [("piv", "Personal Identity Verification Card"),
                                            ("cac", "Common Access Card (CAC)")])
def test_card_sim_puts_a_demo_card_in_the_reader_until_sigterm(
        pcsc_stack: str, vpcd_lock: None, tmp_path: Path, kind: str, name: str) -> None:
    time.sleep(REINSERT_GAP)  # a card pulled by another process must be gone from vpcd first
    proc = subprocess.Popen([sys.executable, "-c", RUN, kind, "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for_card("Virtual PCD 00 00", timeout=20)
        out = subprocess.run(["opensc-tool", "-n"], capture_output=True, text=True, timeout=30)
        assert name in out.stdout
        user = x509.load_pem_x509_certificate((tmp_path / "user.pem").read_bytes())
        ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
        assert user.issuer == ca.subject and (tmp_path / "root.pem").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=10)
        wait_for_card("Virtual PCD 00 00", present=False, timeout=5)
    assert proc.returncode == 0, output
    assert "connected: card inserted in reader 'Virtual PCD 00 00'" in output
    assert "stopped (" in output
