"""Real local users for the tests of what one local user can do to another.

``local_user(name)`` creates an unprivileged account (useradd; needs root — callers go through
``require.unavailable`` otherwise) and :func:`run_as` runs ``broker-client`` as that user: the
process starts as root only to load Python (the interpreter may live under a folder other
users cannot enter, /root/.pyenv here), then drops to the user's uid, gid and groups for good
before the command runs — every file the command opens or creates, it opens as that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

_RUNNER = Path(__file__).with_name("run_as_user.py")


def users_problem() -> str | None:
    if os.geteuid() != 0:
        return "creating local users and switching to them needs root"
    if shutil.which("useradd") is None:
        return "useradd is not installed"
    return None


def local_user(name: str) -> pwd.struct_passwd:
    """An unprivileged local account ``name`` (created once, kept for later runs)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True, timeout=30)
    return pwd.getpwnam(name)


def run_as(user: pwd.struct_passwd, *args: str, stdin: str | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``broker-client ARGS`` as ``user`` (see the module doc)."""
    full_env = {**os.environ, "HOME": "/nonexistent", **(env or {})}
    return subprocess.run([sys.executable, str(_RUNNER), str(user.pw_uid), str(user.pw_gid),
                           *args], capture_output=True, text=True, input=stdin, timeout=60,
                          env=full_env)


def popen_as(user: pwd.struct_passwd, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(_RUNNER), str(user.pw_uid), str(user.pw_gid),
                             *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HOME": "/nonexistent"})
