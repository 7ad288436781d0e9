"""PC/SC fixtures: pcscd with the vsmartcard vpcd reader, and simulated cards inserted into it.

``vpcd_card(card, port=35963)`` puts a :class:`~broker.cardsim.card.VirtualCard` into the vpcd
reader and returns the running :class:`~broker.cardsim.vpcd.VpcdLink` once pcscd reports the
card present; links are stopped at teardown. The vpcd port is one per machine, so the fixture
holds an exclusive ``flock`` on ``/tmp/smartcard-broker-vpcd.lock`` for its whole duration.
Tests skip with the reason when pcscd, the vpcd driver, OpenSC or pyscard are missing; pcscd is
started (and stopped afterwards) when it is not running.
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.cardsim.card import VirtualCard
from broker.cardsim.vpcd import DEFAULT_PORT, REINSERT_GAP, VpcdLink, reader_name
from tests.support.require import unavailable

LOCK_PATH = "/tmp/smartcard-broker-vpcd.lock"
VPCD_DRIVER = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"
TOOLS = ("pcscd", "opensc-tool", "pkcs15-tool", "pkcs11-tool")


def pcsc_missing() -> str | None:
    """Why the PC/SC card stack cannot run here, or None when it can."""
    for tool in TOOLS:
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"{tool} is not installed (apt-get install pcscd opensc vsmartcard-vpcd)"
    if not os.path.exists(VPCD_DRIVER):
        return "the vsmartcard vpcd reader driver is not installed (vsmartcard-vpcd)"
    if opensc_pkcs11_module() is None:
        return "opensc-pkcs11.so was not found"
    try:
        import smartcard  # noqa: F401
    except ImportError:
        return "pyscard is not installed (pip install pyscard)"
    return None


def opensc_pkcs11_module() -> str | None:
    """OpenSC's PKCS#11 module on this machine (Debian multiarch paths first)."""
    for pattern in ("/usr/lib/*-linux-gnu/opensc-pkcs11.so", "/usr/lib/*-linux-gnu/pkcs11/"
                    "opensc-pkcs11.so", "/usr/lib*/opensc-pkcs11.so",
                    "/usr/lib*/pkcs11/opensc-pkcs11.so", "/usr/local/lib/opensc-pkcs11.so"):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def pcscd_running() -> bool:
    return subprocess.run(["pidof", "pcscd"], capture_output=True).returncode == 0


def readers() -> list[str]:
    from smartcard.System import readers as list_readers

    try:
        return [str(r) for r in list_readers()]
    except Exception:  # pcscd not (yet) answering
        return []


def card_present(reader: str) -> bool | None:
    """Whether pcscd sees a card in ``reader``: True (connect works), False (no card), None
    (in between: a card is there but unpowered/unresponsive, e.g. just pulled)."""
    from smartcard.Exceptions import NoCardException
    from smartcard.System import readers as list_readers

    try:
        for r in list_readers():
            if str(r) == reader:
                conn = r.createConnection()
                conn.connect()
                conn.disconnect()
                return True
    except NoCardException:
        return False
    except Exception:
        return None
    return False


def wait_for_card(reader: str, present: bool = True, timeout: float = 10.0) -> bool:
    """Poll pcscd until the card in ``reader`` is (or is no longer) present."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if card_present(reader) is present:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="session")
def pcsc_stack() -> Iterator[str]:
    """pcscd up with the vpcd readers; yields the OpenSC PKCS#11 module path."""
    missing = pcsc_missing()
    if missing:
        unavailable("pcsc", f"PC/SC card stack unavailable: {missing}")
    started: subprocess.Popen[bytes] | None = None
    if not pcscd_running():
        try:
            started = subprocess.Popen(["pcscd", "-f"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        except OSError as exc:
            unavailable("pcsc", f"cannot start pcscd: {exc}")
    deadline = time.monotonic() + 10
    while reader_name(DEFAULT_PORT) not in readers():
        if time.monotonic() > deadline:
            if started is not None:
                started.terminate()
                started.wait(5)
            unavailable("pcsc", "pcscd does not show the vpcd reader 'Virtual PCD 00 00' "
                        "(needs root or a writable /run/pcscd)")
        time.sleep(0.2)
    module = opensc_pkcs11_module()
    assert module is not None
    yield module
    if started is not None:
        started.terminate()
        started.wait(5)


@pytest.fixture
def vpcd_lock() -> Iterator[None]:
    """The machine-wide vpcd port: held exclusively for the test's duration."""
    Path(LOCK_PATH).touch(exist_ok=True)
    with open(LOCK_PATH, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture
def vpcd_card(pcsc_stack: str, vpcd_lock: None) -> Iterator[Callable[..., VpcdLink]]:
    """Factory: ``vpcd_card(card, port=35963)`` → a running link with the card present."""
    links: list[VpcdLink] = []
    # another process may have pulled its card a moment ago: vpcd only notices at its next
    # presence poll, and a card connecting before that stays invisible to pcscd, so wait until
    # pcscd shows both vpcd readers empty (at once when they are; in-process re-insertions
    # also wait out REINSERT_GAP in VpcdLink itself)
    for port in (DEFAULT_PORT, DEFAULT_PORT + 1):
        wait_for_card(reader_name(port), present=False, timeout=3 * REINSERT_GAP)

    def insert(card: VirtualCard, port: int = DEFAULT_PORT) -> VpcdLink:
        link = VpcdLink(card, port=port).start()
        links.append(link)
        for attempt in range(2):
            if link.wait_connected(10) is None:
                pytest.fail(f"the card did not connect to vpcd on port {port}")
            if wait_for_card(link.reader, timeout=5):
                break
            if attempt == 0:  # vpcd still held a stale connection: pull and re-insert once
                link.remove()
                link.insert()
        else:
            pytest.fail(f"pcscd does not see the card in '{link.reader}'")
        card.stats.clear()
        return link

    yield insert
    for link in links:
        link.stop()
        wait_for_card(link.reader, present=False, timeout=3)


@pytest.fixture
def pkcs11_module(pcsc_stack: str) -> str:
    return pcsc_stack
