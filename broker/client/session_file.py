"""The session file: what the desktop side (``pam-auth``) needs to know about a running session.

``broker-client login --session-file FILE`` writes it once the session is open; it is JSON,
mode 0600, written atomically::

    {"format": 1, "state": "active", "broker": "https://HOST:PORT",
     "ca_file": PATH | "pin_sha256": HEX, "issuer": BROKER_ID, "session_id": ID,
     "auth_token": TOKEN, "user": USERNAME, "directory": ID, "workspace_id": ID,
     "protocol": "WSP" | "PCoIP", "auth_method": "password" | "smart_card",
     "certificate_sha256": HEX | null, "created_at": RFC 3339}

When the session ends (the broker says disconnect, the user stops ``--hold``) the file is
rewritten as ``{"format": 1, "state": "ended", "ended_at", "reason", "session_id", "user"}``:
the auth token is gone from the disk and ``pam-auth`` refuses with "session ended".
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.errors import BrokerError

FORMAT = 1
MAX_SIZE = 64 * 1024


class SessionFileError(BrokerError):
    code = "session_file_invalid"


@dataclass(frozen=True)
class SessionFile:
    """A parsed session file; ``state`` is "active" or "ended"."""

    path: Path
    data: dict[str, Any]
    owner_uid: int = -1

    @property
    def state(self) -> str:
        return str(self.data.get("state", "active"))

    @property
    def user(self) -> str:
        return str(self.data.get("user", ""))

    @property
    def session_id(self) -> str:
        return str(self.data.get("session_id", ""))

    @property
    def auth_token(self) -> str:
        return str(self.data.get("auth_token", ""))

    @property
    def broker(self) -> str:
        return str(self.data.get("broker", ""))


def now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON with mode 0600, atomically (a reader never sees half a file),
    through a private temporary name (:func:`broker.private_files.write_private`): in a shared
    sticky folder another user can neither receive the token nor keep the file from us."""
    from broker.private_files import UnsafePathError, write_private

    try:
        write_private(path, (json.dumps(data, indent=2) + "\n").encode())
    except UnsafePathError as exc:
        raise SessionFileError(message=f"session file not written: {exc.message}") from None
    except OSError as exc:
        raise SessionFileError(message=f"cannot write the session file {path}: "
                                       f"{exc.strerror}") from None


def check_location(path: Path) -> None:
    """Before logging in: SessionFileError when ``path`` could not be written safely (a
    folder others may write that is not sticky, or a file there owned by someone else)."""
    from broker.private_files import UnsafePathError, check_folder, check_target

    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        check_folder(folder)
        check_target(path)
    except UnsafePathError as exc:
        raise SessionFileError(message=f"session file not written: {exc.message}") from None


def write_active(path: Path, *, broker: str, ca_file: str | None, pin_sha256: str | None,
                 issuer: str | None, session: dict[str, Any], auth_token: str, user: str,
                 directory: str | None, auth_method: str,
                 certificate_sha256: str | None) -> None:
    data: dict[str, Any] = {"format": FORMAT, "state": "active", "broker": broker}
    if ca_file:
        data["ca_file"] = str(Path(ca_file).resolve())
    else:
        data["pin_sha256"] = pin_sha256
    data.update({"issuer": issuer, "session_id": session["id"], "auth_token": auth_token,
                 "user": user, "directory": directory,
                 "workspace_id": session.get("workspace_id"),
                 "protocol": session.get("gateway", {}).get("protocol"),
                 "auth_method": auth_method, "certificate_sha256": certificate_sha256,
                 "created_at": now_rfc3339()})
    _write_private(path, data)


def mark_ended(path: Path, reason: str) -> None:
    """Rewrite the file as ended, dropping the auth token; nothing when it is already gone."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(old, dict):
        return
    _write_private(path, {"format": FORMAT, "state": "ended", "ended_at": now_rfc3339(),
                          "reason": reason, "session_id": old.get("session_id"),
                          "user": old.get("user")})


def load(path: Path, allowed_owners: set[int] | None = None) -> SessionFile:
    """Read and check a session file. With ``allowed_owners`` (pam-auth running as root) the
    file must be owned by one of them and be neither group- nor world-accessible.
    SessionFileError with a one-line reason otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise SessionFileError(message=f"no session file at {path} (log in with "
                                       "--session-file first)") from None
    except OSError as exc:
        raise SessionFileError(message=f"cannot open the session file {path}: "
                                       f"{exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise SessionFileError(message=f"{path} is not a regular file")
        if allowed_owners is not None:
            if st.st_uid not in allowed_owners:
                raise SessionFileError(message=f"{path} is owned by uid {st.st_uid}, not by "
                                               "the user or root")
            if st.st_mode & 0o077:
                raise SessionFileError(message=f"{path} is readable or writable by others "
                                               f"(mode {st.st_mode & 0o777:o}; must be 600)")
        raw = f.read(MAX_SIZE + 1)
    if len(raw) > MAX_SIZE:
        raise SessionFileError(message=f"{path} is too large to be a session file")
    try:
        data = json.loads(raw)
    except ValueError:
        raise SessionFileError(message=f"{path} is not valid JSON") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SessionFileError(message=f"{path} is not a session file of format {FORMAT}")
    sf = SessionFile(path, data, st.st_uid)
    if sf.state == "active" and not (sf.session_id and sf.auth_token and sf.user and sf.broker):
        raise SessionFileError(message=f"{path} lacks the session, token, user or broker")
    return sf
