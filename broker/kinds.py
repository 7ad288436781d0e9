"""Closed sets of the domain, one StrEnum each: the database columns that hold them
(``sqlalchemy.Enum(native_enum=False)`` with a CHECK constraint, broker/store/models.py), the
admin declarations' choices (broker/admin/) and the code that compares them all use
these members; the models declare each such column ``Mapped[kinds.X]``, so a misspelt state is a
mypy error. :class:`CertmapRule` also owns what decides each rule (column, case folding, the
certificate's values, the matcher). Pure: standard library only, so every layer may import it.

Members are ``str``: ``SessionState.ACTIVE == "active"``, and JSON carries the value.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol as _Protocol


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
LIVE_SESSION_STATES = (SessionState.ACTIVE, SessionState.LOCKED)


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


class SessionEndReason(enum.StrEnum):
    """Why a session ended (``sessions.end_reason``)."""

    CLIENT = "client"
    TAKEN_OVER = "taken_over"
    DISCONNECTED = "disconnected"
    CARD_REMOVED = "card_removed"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    ADMIN = "admin"
    PROTOCOL_CHANGED = "protocol_changed"


class LdapFlavour(enum.StrEnum):
    """The kind of LDAP server a directory's users live in (its default attributes)."""

    AD = "ad"
    GENERIC = "generic"


@dataclass(frozen=True)
class _RuleSpec:
    #: The ``users`` column the rule compares (None: only an LDAP directory has the rule).
    column: str | None
    #: The certificate's side and the user's are compared case-insensitively.
    folds_case: bool
    #: The certificate may offer several values (any one of them matches).
    many: bool


class _Names(_Protocol):
    """What a certificate names (:class:`broker.pki.identity.CertIdentity`)."""

    @property
    def subject(self) -> str: ...
    @property
    def upn(self) -> str | None: ...
    @property
    def emails(self) -> tuple[str, ...]: ...
    @property
    def fingerprint(self) -> str: ...


class CertmapRule(enum.StrEnum):
    """A way to map a certificate to a directory user, tried in a directory's ``certmap`` order.

    Each member owns, in :data:`_RULES`, everything that decides it: the ``users`` column it
    compares (the store builds its SQL condition and index hint from :attr:`column`,
    :attr:`folds_case` and :attr:`many`), the values it binds (:meth:`cert_values`) and its
    in-memory matcher (:meth:`matches`). The LDAP-only rules are looked up by
    broker/service/ldapdir.py in the directory's own attributes.
    """

    UPN = "upn"
    EMAIL = "email"
    SUBJECT = "subject"
    FINGERPRINT = "fingerprint"
    CERTIFICATE = "certificate"
    ALT_SECURITY_IDENTITIES = "alt_security_identities"
    ALT_SECURITY_IDENTITIES_WEAK = "alt_security_identities_weak"

    @property
    def column(self) -> str | None:
        return _RULES[self].column

    @property
    def folds_case(self) -> bool:
        return _RULES[self].folds_case

    @property
    def many(self) -> bool:
        return _RULES[self].many

    @property
    def ldap_only(self) -> bool:
        return _RULES[self].column is None

    def cert_values(self, ident: _Names) -> tuple[str, ...]:
        """What the certificate offers this rule, folded as the rule compares (empty: nothing
        to look up). The LDAP-only rules read the DER: ValueError here."""
        if self is CertmapRule.UPN:
            raw: tuple[str, ...] = (ident.upn,) if ident.upn else ()
        elif self is CertmapRule.EMAIL:
            raw = ident.emails
        elif self is CertmapRule.SUBJECT:
            raw = (ident.subject,)
        elif self is CertmapRule.FINGERPRINT:
            raw = (ident.fingerprint,)
        else:
            raise ValueError(f"certmap rule {self.value} needs an LDAP directory")
        return tuple(sorted({v.lower() for v in raw})) if self.folds_case else raw

    def matches(self, ident: _Names, user_value: str | None) -> bool:
        """Whether a user whose column holds ``user_value`` is the certificate's by this rule."""
        if not user_value:
            return False
        return (user_value.lower() if self.folds_case else user_value) in \
            self.cert_values(ident)


_RULES: dict[CertmapRule, _RuleSpec] = {
    CertmapRule.UPN: _RuleSpec("upn", folds_case=True, many=False),
    CertmapRule.EMAIL: _RuleSpec("email", folds_case=True, many=True),
    CertmapRule.SUBJECT: _RuleSpec("subject", folds_case=False, many=False),
    CertmapRule.FINGERPRINT: _RuleSpec("cert_fingerprint", folds_case=True, many=False),
    CertmapRule.CERTIFICATE: _RuleSpec(None, folds_case=False, many=False),
    CertmapRule.ALT_SECURITY_IDENTITIES: _RuleSpec(None, folds_case=False, many=True),
    CertmapRule.ALT_SECURITY_IDENTITIES_WEAK: _RuleSpec(None, folds_case=False, many=True),
}

#: The rules a directory of the broker's own users can use (each has an index on ``users``).
LOCAL_CERTMAP_RULES = tuple(r for r in CertmapRule if not r.ldap_only)
#: A new directory's certmap.
DEFAULT_CERTMAP = (CertmapRule.UPN, CertmapRule.EMAIL)
