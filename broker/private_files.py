"""Private files (session files, registrations, keys, databases) written so another local user
can neither read nor pre-empt them.

* a write goes to a fresh unpredictable name in the target folder (``mkstemp``:
  ``O_CREAT|O_EXCL``, mode 0600), is ``fchmod``-ed 0600 before a byte is written, then renamed
  into place — a pre-created or symlinked temporary name gets nothing;
* a folder writable by group or others is refused unless it is sticky (``/tmp``, ``/run/…``
  with mode 1777); in a sticky folder an existing target owned by someone else is refused,
  since the owner of that file could read what is "replaced" into it or keep it from us;
* folders this code creates are 0700 and files 0600 whatever the umask.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from broker.codes import Code
from broker.errors import BrokerError


class UnsafePathError(BrokerError):
    code = Code.UNSAFE_PATH


def _uid() -> int:
    return os.geteuid()


def check_folder(folder: Path, *, trusted_uids: frozenset[int] = frozenset({0})) -> bool:
    """UnsafePathError when ``folder`` is writable by others and not sticky, or is owned by
    someone other than us or root. True when it is a shared sticky folder."""
    try:
        st = os.stat(folder)
    except OSError as exc:
        raise UnsafePathError(message=f"cannot use the folder {folder}: {exc.strerror}") \
            from None
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(message=f"{folder} is not a folder")
    if st.st_uid != _uid() and st.st_uid not in trusted_uids:
        raise UnsafePathError(message=f"{folder} is owned by uid {st.st_uid}, not by this "
                                      "user or root; choose a folder of your own")
    shared = bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))
    if shared and not st.st_mode & stat.S_ISVTX:
        raise UnsafePathError(message=f"{folder} is writable by other users and not sticky "
                                      f"(mode {st.st_mode & 0o7777:o}); choose a private folder")
    return shared


def check_target(path: Path) -> None:
    """UnsafePathError when ``path`` exists as something other than a regular file of ours."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(message=f"{path} exists and is not a regular file (a symbolic "
                                      "link?); remove it first")
    if st.st_uid != _uid():
        raise UnsafePathError(message=f"{path} exists and belongs to uid {st.st_uid}, not to "
                                      "this user; remove it or choose another path")


def private_dir(folder: Path) -> Path:
    """Create ``folder`` (and missing parents) 0700 whatever the umask; an existing folder is
    left as it is (doctor reports loose modes)."""
    missing = []
    p = folder
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)
    return folder


def write_private(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically with ``mode``, as described in the module doc."""
    folder = path.parent
    if not folder.exists():
        private_dir(folder)
    check_folder(folder)
    check_target(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        check_target(path)  # the target may have appeared meanwhile
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def create_private(path: Path, data: bytes) -> bool:
    """Create ``path`` 0600 with ``data`` only when it does not exist yet (O_EXCL|O_NOFOLLOW);
    False when it was already there (someone else made it first: theirs is used)."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True
