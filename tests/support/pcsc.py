"""The real PC/SC stack for tests: pcscd (started when absent), vpcd readers, virtual cards.

vpcd's ports are machine-wide, so every test that uses them holds an exclusive file lock for its
whole duration; tests skip with the reason when pcscd, vpcd or pyscard is missing.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.require import unavailable

LOCK = Path("/tmp/smartcard-broker-vpcd.lock")
PORTS = (35963, 35964)


def stack_problem() -> str | None:
    if shutil.which("pcscd") is None:
        return "pcscd is not installed (apt-get install pcscd)"
    if not Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so").exists():
        return "vsmartcard-vpcd is not installed (apt-get install vsmartcard-vpcd)"
    try:
        import smartcard  # noqa: F401
    except ImportError:
        return "pyscard is not installed (pip install pyscard)"
    return None


def ensure_pcscd() -> None:
    if subprocess.run(["pgrep", "-x", "pcscd"], capture_output=True).returncode == 0:
        return
    subprocess.Popen(["pcscd", "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)
    from broker.client import transport

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if len(transport.readers()) >= 1:
                return
        except Exception:  # pcscd still starting
            pass
        time.sleep(0.2)
    unavailable("pcsc", "pcscd did not come up")


def wait_present(count: int, timeout: float = 10.0) -> bool:
    from broker.client import transport

    deadline = time.monotonic() + timeout
    while transport.card_count() != count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@contextmanager
def vpcd_cards(*cards: Any) -> Iterator[list[Any]]:
    """Put ``cards`` into the vpcd readers (first in 'Virtual PCD 00 00', …) under the lock."""
    problem = stack_problem()
    if problem:
        unavailable("pcsc", problem)
    from broker.cardsim.vpcd import VpcdLink

    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ensure_pcscd()
        links = [VpcdLink(card, port=port).start() for card, port in zip(cards, PORTS,
                                                                          strict=False)]
        try:
            for link in links:
                assert link.wait_connected(10), "vpcd did not accept the virtual card"
            for _attempt in range(3):
                if wait_present(len(links), 8.0):
                    break
                # vpcd can miss a card that came back before its presence poll noticed the
                # last one leave: take the cards out, wait until pcscd shows them gone (each
                # link also waits out REINSERT_GAP after its close), insert them again.
                for link in links:
                    link.remove()
                wait_present(0, 5.0)
                for link in links:
                    link.insert()
                    link.wait_connected(10)
            else:
                raise AssertionError(f"pcscd does not see {len(links)} card(s)")
            yield links
        finally:
            for link in links:
                link.stop()
            # pcscd showing no card means vpcd's presence poll saw the removal: the next test
            # (in any process) can insert at once
            wait_present(0)


#: The thin client as a user runs it.
CLIENT_CLI = [sys.executable, "-m", "broker.client.cli"]


def register_client(broker: Any, code: str, config: Path) -> None:
    """`broker-client register` a 64-bit Windows 3.1.1 client with ``code`` against ``broker``
    (writing ``config``); the broker must offer it the smart card."""
    reg = subprocess.run(CLIENT_CLI + ["register", code, "--broker", f"127.0.0.1:{broker.port}",
                                       "--cafile", str(broker.cafile), "--config", str(config),
                                       "--as-client", "windows/x86_64/3.1.1"],
                         capture_output=True, text=True, timeout=60)
    assert reg.returncode == 0 and "smart_card" in reg.stdout, reg.stderr


def hold_command(config: Path, workspace: str) -> list[str]:
    """`broker-client login --hold` on ``workspace``, PIN on stdin, fast heartbeats."""
    return CLIENT_CLI + ["login", "--config", str(config), "--pin-stdin", "--workspace",
                         workspace, "--hold", "--heartbeat-interval", "0.3"]
