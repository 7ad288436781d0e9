"""What one local user can do to another's session file, tried as two real local users.

A victim logs in with ``--session-file`` into a shared sticky folder (the README's
``/run/smartcard-broker/%u.json`` shape, mode 1777); an attacker — another unprivileged
account — pre-creates the names the client used to write through. The attacker must get
nothing, and the victim either a safe write or one clear line before any session is opened.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.require import unavailable
from tests.support.users import local_user, popen_as, run_as, users_problem


@dataclass
class Users:
    victim: Any
    attacker: Any
    base: Path
    shared: Path
    config: Path


@pytest.fixture(scope="module")
def users(secured: Any) -> Iterator[Users]:
    problem = users_problem()
    if problem:
        unavailable("pam", problem)
    victim, attacker = local_user("sbvictim"), local_user("sbattacker")
    base = Path(tempfile.mkdtemp(prefix="sb-local-", dir="/tmp"))
    try:
        base.chmod(0o755)
        shared = base / "run"
        shared.mkdir()
        shared.chmod(0o1777)
        cafile = base / "ca.pem"
        shutil.copyfile(secured.broker.cafile, cafile)
        cafile.chmod(0o644)
        home = base / "victim"
        home.mkdir(mode=0o700)
        os.chown(home, victim.pw_uid, victim.pw_gid)
        config = home / "client.json"
        reg = run_as(victim, "register", secured.world.codes["east"], "--broker",
                     f"127.0.0.1:{secured.broker.port}", "--cafile", str(cafile),
                     "--config", str(config))
        assert reg.returncode == 0, reg.stderr
        assert os.stat(config).st_uid == victim.pw_uid
        assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
        yield Users(victim, attacker, base, shared, config)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _login_args(u: Users, session_file: Path) -> list[str]:
    return ["login", "--config", str(u.config), "--username", "erin", "--password-stdin",
            "--workspace", "ws-erin", "--session-file", str(session_file), "--json"]


def _plant(u: Users, path: Path) -> None:
    """What the attacker leaves: an empty file of theirs that anyone may write."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    os.fchown(fd, u.attacker.pw_uid, u.attacker.pw_gid)
    os.fchmod(fd, 0o666)
    os.close(fd)


def _attacker_files(u: Users, folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()
            if p.stat().st_uid == u.attacker.pw_uid}


def test_a_pre_created_temporary_name_receives_nothing(users: Users, secured: Any) -> None:
    """The old client wrote through ``.NAME.PID.tmp`` without O_EXCL: a file the attacker made
    under that name received the JSON with the auth token."""
    u = users
    target = u.shared / "sbvictim.json"
    proc = popen_as(u.victim, *_login_args(u, target))
    # The attacker guesses the temporary name from the process id, before the write.
    planted = u.shared / f".{target.name}.{proc.pid}.tmp"
    _plant(u, planted)
    out, err = proc.communicate("erin password\n", timeout=60)
    assert proc.returncode == 0, err
    session = json.loads(out)
    secured.remember(session["id"])
    written = json.loads(target.read_text())
    secured.remember(written["auth_token"])
    st = os.stat(target)
    assert st.st_uid == u.victim.pw_uid and stat.S_IMODE(st.st_mode) == 0o600
    stolen = _attacker_files(u, u.shared)
    assert stolen == {planted.name: b""}, "the attacker's file received the session file"
    assert not any(written["auth_token"].encode() in data for data in stolen.values())
    target.unlink()
    planted.unlink()


def test_a_pre_created_session_file_is_a_clear_refusal_before_login(users: Users) -> None:
    """The victim's own file name, taken first by the attacker: one clear line, no session
    opened, and still nothing for the attacker."""
    u = users
    target = u.shared / "sbvictim.json"
    _plant(u, target)
    try:
        done = run_as(u.victim, *_login_args(u, target), stdin="erin password\n")
        assert done.returncode == 1
        assert f"belongs to uid {u.attacker.pw_uid}" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        assert done.stdout == "", "a session was opened although the file cannot be written"
        assert _attacker_files(u, u.shared) == {target.name: b""}
    finally:
        target.unlink()


def test_a_folder_others_may_write_without_the_sticky_bit_is_refused(users: Users) -> None:
    u = users
    open_folder = u.base / "open"
    open_folder.mkdir()
    open_folder.chmod(0o777)
    done = run_as(u.victim, *_login_args(u, open_folder / "s.json"), stdin="erin password\n")
    assert done.returncode == 1
    assert "writable by other users and not sticky" in done.stderr, done.stderr
    assert done.stdout == "" and list(open_folder.iterdir()) == []


def test_the_session_file_in_the_users_own_folder_is_private(users: Users,
                                                             secured: Any) -> None:
    u = users
    mine = u.config.parent / "session.json"
    done = run_as(u.victim, *_login_args(u, mine), stdin="erin password\n")
    assert done.returncode == 0, done.stderr
    secured.remember(json.loads(mine.read_text())["auth_token"])
    st = os.stat(mine)
    assert st.st_uid == u.victim.pw_uid and stat.S_IMODE(st.st_mode) == 0o600
    # no temporary file left behind
    assert sorted(p.name for p in mine.parent.iterdir()) == ["client.json", "session.json"]
