"""pcscd restarted while ``broker-client login --hold`` runs: the client waits for it and carries
on (no false "card removed"), or, when it does not come back, prints one clear line and exits
non-zero; it never hangs.

The machine's pcscd is shared and not ours to restart, so the test runs its own: in a private
mount namespace (``unshare -m``) with its own /run/pcscd, a pcscd whose only reader is vpcd on
port 35967, and the client beside it. The virtual card (in this process) connects to that port
and reconnects when pcscd comes back, as a card-sim does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from broker.cardsim import PivCard
from broker.cardsim.vpcd import VpcdLink
from tests.support.databases import database_url
from tests.support.pcsc import hold_command, register_client
from tests.support.require import unavailable
from tests.support.world import build_world

pytestmark = pytest.mark.pcsc

PORT = 35967  # vpcd CHANNELID 0x8C7F: not the machine's readers (35963/35964)

DRIVER = textwrap.dedent("""
    import json, subprocess, sys, threading, time
    conf, mode, cmd = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run/pcscd"], check=True)

    def pcscd():
        return subprocess.Popen(["pcscd", "-f", "-c", conf], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    def card_seen(timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            out = subprocess.run([sys.executable, "-m", "broker.client.cli", "card", "info",
                                  "--json"], capture_output=True, text=True, timeout=30)
            if out.returncode == 0:
                return True
            time.sleep(0.5)
        return False

    daemon = pcscd()
    if not card_seen(20):
        # say who has the port while our pcscd still runs (an ephemeral port of another
        # connection can be it), then stop it: it must not outlive us
        users = subprocess.run(["ss", "-tanp", "sport = :35967"], capture_output=True,
                               text=True).stdout
        daemon.terminate()
        daemon.wait(10)
        raise AssertionError("the private pcscd does not see the card; port 35967: " + users)
    client = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    client.stdin.write("123456\\n")
    client.stdin.close()
    first = client.stdout.readline()
    err_lines = []
    reader = threading.Thread(target=lambda: err_lines.extend(iter(client.stderr.readline, "")),
                              daemon=True)
    reader.start()

    def wait_for(text, timeout=40):
        # poll the client's stderr (no fixed sleeps): True once a line contains text
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(text in line for line in list(err_lines)):
                return True
            time.sleep(0.05)
        return False

    held = wait_for("heartbeat: card present")  # the hold saw the card, the broker answered
    daemon.terminate()  # our own pcscd, by its handle
    daemon.wait(10)
    if mode == "restart":
        wait_for("is not answering")
        daemon = pcscd()
        wait_for("the PC/SC service is back")  # heartbeats went on meanwhile
        client.send_signal(2)  # Ctrl-C: the client ends the session
    try:
        client.wait(40)
        code = client.returncode
    except subprocess.TimeoutExpired:
        client.kill()
        client.wait()
        code = "hung"
    if daemon.poll() is None:
        daemon.terminate()
        daemon.wait(10)
    reader.join(10)
    print(json.dumps({"first": first, "code": code, "stderr": "".join(err_lines),
                      "held": held}))
""")


def run_in_private_pcsc(tmp_path: Path, mode: str, cmd: list[str]) -> dict[str, object]:
    if shutil.which("unshare") is None or shutil.which("pcscd") is None:
        unavailable("pcsc", "needs unshare and pcscd")
    conf = tmp_path / "reader.conf"
    conf.write_text('FRIENDLYNAME "Faults PCD"\nDEVICENAME /dev/null:0x8C7F\n'
                    "LIBPATH /usr/lib/pcsc/drivers/serial/libifdvpcd.so\nCHANNELID 0x8C7F\n")
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c",
                           DRIVER, str(conf), mode, json.dumps(cmd)],
                          capture_output=True, text=True, timeout=150)
    if proc.returncode != 0 and "unshare" in proc.stderr:
        unavailable("pcsc", f"cannot make a mount namespace here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture
def held_login(broker_factory, tmp_path):  # type: ignore[no-untyped-def]
    """(client command, running card link) for `login --hold` against a fresh broker."""
    with database_url("sqlite", tmp_path) as url:
        bp = broker_factory(url)
        w = build_world(tmp_path / "w", bp, removal="disconnect")
        cfg = tmp_path / "client.json"
        register_client(bp, w.codes["corp"], cfg)
        soft = w.cards["bob"]
        link = VpcdLink(PivCard(key=soft.key, certificate=soft.cert), port=PORT).start()
        try:
            yield hold_command(cfg, "ws-bob")
        finally:
            link.stop()


def test_pcscd_restart_during_hold_is_waited_out_not_taken_for_a_removal(
        held_login, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = run_in_private_pcsc(tmp_path, "restart", held_login)
    err = str(out["stderr"])
    assert str(out["first"]).startswith("session "), out
    assert out["held"], err
    assert out["code"] == 0, err
    assert "PC/SC service (pcscd) is not answering" in err
    assert "the PC/SC service is back" in err
    assert "card removed" not in err and "disconnected" not in err, err
    assert "session ended" in err


def test_pcscd_gone_for_good_ends_hold_with_one_clear_line(
        held_login, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = run_in_private_pcsc(tmp_path, "stop", held_login)
    err = str(out["stderr"])
    assert out["code"] not in (0, "hung"), out
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "pcscd" in errors[0], err
    assert "error: unexpected" not in err
