"""Closed sets of the domain, one StrEnum each: the database columns that hold them
(``sqlalchemy.Enum(native_enum=False)`` with a CHECK constraint, broker/store/models.py), the
admin declarations' choices (broker/admin/) and the code that compares them all use
these members. Pure: standard library only, so every layer may import it.

Members are ``str``: ``SessionState.ACTIVE == "active"``, and JSON carries the value.
"""

from __future__ import annotations

import enum


def values(members: type[enum.StrEnum]) -> tuple[str, ...]:
    """The plain string values of ``members``, in declaration order (choices, CHECKs)."""
    return tuple(m.value for m in members)


class Protocol(enum.StrEnum):
    """Streaming protocol of a WorkSpace: smart cards only ever over WSP."""

    WSP = "WSP"
    PCOIP = "PCoIP"

    @classmethod
    def _missing_(cls, value: object) -> Protocol | None:
        # "wsp", "pcoip": protocol names are case-insensitive in the admin API and TOML files
        if isinstance(value, str):
            for member in cls:
                if member.value.lower() == value.strip().lower():
                    return member
        return None


class Purpose(enum.StrEnum):
    """What a smart-card challenge is for."""

    PRE_SESSION = "pre_session"
    LOGON = "logon"
    IN_SESSION = "in_session"


class WorkSpaceState(enum.StrEnum):
    PENDING = "PENDING"
    AVAILABLE = "AVAILABLE"
    STARTING = "STARTING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    ERROR = "ERROR"
    UNHEALTHY = "UNHEALTHY"


class WorkSpaceOs(enum.StrEnum):
    """The operating system a WorkSpace is stated to run (not stated: NULL, every purpose)."""

    WINDOWS = "windows"
    LINUX = "linux"


class RunningMode(enum.StrEnum):
    ALWAYS_ON = "ALWAYS_ON"
    AUTO_STOP = "AUTO_STOP"


class RemovalAction(enum.StrEnum):
    """What a session does when the card is removed."""

    NONE = "none"
    LOCK = "lock"
    DISCONNECT = "disconnect"


class FailMode(enum.StrEnum):
    """Revocation status unknown: soft allows (and reports), hard refuses."""

    SOFT = "soft"
    HARD = "hard"


class RequiredEku(enum.StrEnum):
    CLIENT_AUTH = "client-auth"
    ANY = "any"


class TrustKind(enum.StrEnum):
    ANCHOR = "anchor"
    INTERMEDIATE = "intermediate"


class CodeState(enum.StrEnum):
    """A registration code's life: rotated codes still answer during their grace period."""

    ACTIVE = "active"
    ROTATED = "rotated"
    REVOKED = "revoked"


class AuthMethod(enum.StrEnum):
    SMART_CARD = "smart_card"
    PASSWORD = "password"


class SessionState(enum.StrEnum):
    ACTIVE = "active"
    LOCKED = "locked"
    ENDED = "ended"


#: Sessions still in use (a WorkSpace with one is busy; the sweeper watches their heartbeats).
LIVE_SESSION_STATES = (SessionState.ACTIVE.value, SessionState.LOCKED.value)


class SessionAction(enum.StrEnum):
    """What the client must do at its next heartbeat."""

    DISCONNECT = "disconnect"


class Scope(enum.StrEnum):
    """What an admin token allows (and what an admin operation needs)."""

    READ = "read"
    WRITE = "write"


class Outcome(enum.StrEnum):
    """Of an audit event."""

    SUCCESS = "success"
    REFUSED = "refused"
    ERROR = "error"
    CHANGE = "change"
