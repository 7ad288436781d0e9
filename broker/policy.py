"""The rules of WorkSpaces client smart-card support, as one pure function of plain values.

No Twisted, no database, no HTTP: given a catalogue entry, the directory's toggles, the client,
the card count, the WorkSpace protocol and the purpose, :func:`decide_smart_card` returns a
:class:`Decision` that lists EVERY reason that applies (so a user is told everything at once),
in a stable order.

The rules (shared/reference, shared/DESIGN.md §1):

* Smart cards only for WSP, never PCoIP (``smart_card_requires_wsp``).
* Pre-session login (purposes ``pre_session`` and ``logon``, the second PIN at "Starting
  WorkSpace") only where the region's catalogue entry allows it
  (``region_pre_session_unavailable``) and the directory turned it on (``smart_card_disabled``),
  and only from the Windows client 3.1.1 or later (``client_platform_unsupported``,
  ``client_version_unsupported``) on 64-bit Windows (``client_arch_unsupported``).
  64-bit means x86-64 (x86_64, amd64, x64) or ARM64; 32-bit x86 is refused. A version that is
  not a dotted number is ``client_version_unsupported``, never an exception.
* In-session use (sudo, browsers) wherever the region has WSP and the catalogue and the
  directory allow it (``in_session_not_allowed`` for all three — PCoIP, region, directory
  toggle — as DESIGN §5 says; a PCoIP session also carries ``smart_card_requires_wsp``).
* The client rule holds for both: only the Windows client 3.1.1+ on 64-bit Windows redirects
  the card into the WorkSpace, so a session opened from any other client gets no in-session
  use either. A session whose login did not state its client is :data:`UNKNOWN_CLIENT`
  (``client_unknown``). ``client=None`` means "no client in the question" (an administrator's
  view of a directory) and adds no reason.
* ``sudo`` is a Linux WorkSpace's command: refused for a WorkSpace stated as ``windows``
  (``purpose_not_for_os``); a WorkSpace whose ``os`` is not stated keeps every purpose.
* :func:`in_session_use` is THE in-session rule: a session's ``smart_card_redirection`` (its
  ticket claim and its session object) is ``in_session_use(...).allowed`` and its in-session
  challenges are decided by the same call with their purpose.
* One card at a time, pre- and in-session: 0 cards → ``no_card``, 2+ → ``multiple_cards``;
  ``None`` means "not known yet" (registration) and adds no reason. A negative count is junk
  from the client and is read as "no usable card" (``no_card``), never an exception.

Platform, arch and version are arbitrary client text: aliases are normalised case-insensitively
and nothing a client sends makes this module raise.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from broker.kinds import Protocol, Purpose
from broker.regions import RegionEntry

MIN_CLIENT_VERSION = (3, 1, 1)
_ARCH_64 = {"x86_64", "amd64", "x64", "x86-64", "arm64", "aarch64", "win64"}
_ARCH_32 = {"x86", "i386", "i486", "i586", "i686", "win32", "ia32", "arm", "armv7"}
_VERSION_RE = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,6}){0,5}")  # ASCII only, bounded
_WINDOWS = {"windows", "win", "win32", "win64", "microsoft windows"}


class Reason(enum.StrEnum):
    SMART_CARD_REQUIRES_WSP = "smart_card_requires_wsp"
    REGION_PRE_SESSION_UNAVAILABLE = "region_pre_session_unavailable"
    IN_SESSION_NOT_ALLOWED = "in_session_not_allowed"
    SMART_CARD_DISABLED = "smart_card_disabled"
    CLIENT_PLATFORM_UNSUPPORTED = "client_platform_unsupported"
    CLIENT_ARCH_UNSUPPORTED = "client_arch_unsupported"
    CLIENT_VERSION_UNSUPPORTED = "client_version_unsupported"
    CLIENT_UNKNOWN = "client_unknown"
    PURPOSE_NOT_FOR_OS = "purpose_not_for_os"
    NO_CARD = "no_card"
    MULTIPLE_CARDS = "multiple_cards"


@dataclass(frozen=True)
class ClientInfo:
    platform: str
    arch: str
    version: str


class _Unknown(enum.Enum):
    CLIENT = "client_unknown"


#: The client of a login that did not state it (a password login without ``client``).
UNKNOWN_CLIENT = _Unknown.CLIENT

#: In-session purposes that only make sense on one operating system (``sudo``: Linux).
_PURPOSE_OS = {"sudo": "linux"}


@dataclass(frozen=True)
class DirectorySettings:
    pre_session: bool
    in_session: bool
    password_login: bool = False


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reasons: tuple[Reason, ...]

    @classmethod
    def of(cls, reasons: list[Reason]) -> Decision:
        ordered = tuple(r for r in Reason if r in reasons)  # stable order, no duplicates
        return cls(not ordered, ordered)


def parse_version(text: str) -> tuple[int, ...] | None:
    """``"3.1.10"`` → ``(3, 1, 10)``; anything that is not a dotted number → None."""
    if not isinstance(text, str):
        return None
    t = text  # no stripping: "3.1.1\n" is not a version a real client sends
    if t[:1] in ("v", "V"):
        t = t[1:]
    if not _VERSION_RE.fullmatch(t):
        return None
    return tuple(int(p) for p in t.split("."))


def _pad(v: tuple[int, ...]) -> tuple[int, ...]:
    return v + (0,) * (3 - len(v)) if len(v) < 3 else v


def _norm(text: object) -> str:
    return text.strip().lower() if isinstance(text, str) else ""


def normalise_arch(arch: str) -> str | None:
    """"x86_64" for the x86-64 aliases, "arm64" for ARM64, "x86" for 32-bit x86, else None."""
    a = _norm(arch)
    if a in _ARCH_64:
        return "arm64" if a in ("arm64", "aarch64") else "x86_64"
    if a in _ARCH_32:
        return "x86"
    return None


def client_reasons(client: ClientInfo) -> list[Reason]:
    """Why this client may not log in with a card (empty when it may).

    64-bit Windows is x86-64 (x86_64, amd64, x64, …) or ARM64: the reference says only
    "64-bit version of Windows", and Windows on ARM64 is 64-bit Windows. 32-bit x86 and
    anything unrecognised are refused.
    """
    reasons = []
    if _norm(client.platform) not in _WINDOWS:
        reasons.append(Reason.CLIENT_PLATFORM_UNSUPPORTED)
    if normalise_arch(client.arch) not in ("x86_64", "arm64"):
        reasons.append(Reason.CLIENT_ARCH_UNSUPPORTED)
    version = parse_version(client.version)
    if version is None or _pad(version) < MIN_CLIENT_VERSION:
        reasons.append(Reason.CLIENT_VERSION_UNSUPPORTED)
    return reasons


def card_reasons(card_count: int | None) -> list[Reason]:
    """One card at a time: none known → no reason; 0 or negative → no_card; 2+ → multiple."""
    if card_count is None:
        return []
    if card_count <= 0:  # negative counts are junk: treated as no card
        return [Reason.NO_CARD]
    if card_count > 1:
        return [Reason.MULTIPLE_CARDS]
    return []


def decide_smart_card(region: RegionEntry, directory: DirectorySettings, purpose: Purpose, *,
                      client: ClientInfo | _Unknown | None = None,
                      card_count: int | None = None, protocol: Protocol | None = None,
                      os: str | None = None, detail: str | None = None) -> Decision:
    """May a smart card be used for ``purpose`` here? Every applicable reason when not.

    ``client`` None and ``card_count`` None mean "not part of the question" and add no reason;
    :data:`UNKNOWN_CLIENT` is a login that did not say which client it ran (``client_unknown``).
    ``protocol`` None means no WorkSpace is chosen yet; ``os`` is the WorkSpace's stated
    operating system (None: not stated) and ``detail`` the in-session purpose (sudo, browser…).
    Raises ValueError only for a ``purpose`` or ``protocol`` that is not one of the enums'
    values (a programming error, not client input).
    """
    reasons: list[Reason] = []
    if protocol is not None and Protocol(protocol) != Protocol.WSP:
        reasons.append(Reason.SMART_CARD_REQUIRES_WSP)
    if Purpose(purpose) in (Purpose.PRE_SESSION, Purpose.LOGON):
        if not (region.wsp and region.smart_card_pre_session):
            reasons.append(Reason.REGION_PRE_SESSION_UNAVAILABLE)
        if not directory.pre_session:
            reasons.append(Reason.SMART_CARD_DISABLED)
    else:
        if not (region.wsp and region.smart_card_in_session and directory.in_session) \
                or Reason.SMART_CARD_REQUIRES_WSP in reasons:
            reasons.append(Reason.IN_SESSION_NOT_ALLOWED)
        wanted_os = _PURPOSE_OS.get(_norm(detail))
        if wanted_os is not None and _norm(os) not in ("", wanted_os):
            reasons.append(Reason.PURPOSE_NOT_FOR_OS)
    if client is UNKNOWN_CLIENT:
        reasons.append(Reason.CLIENT_UNKNOWN)
    elif isinstance(client, ClientInfo):
        reasons += client_reasons(client)
    reasons += card_reasons(card_count)
    return Decision.of(reasons)


def in_session_use(region: RegionEntry, directory: DirectorySettings, *, protocol: Protocol,
                   client: ClientInfo | _Unknown, os: str | None = None,
                   detail: str | None = None) -> Decision:
    """May the card be used inside this session (for ``detail``, when given)?

    The session's ``smart_card_redirection`` is this Decision's ``allowed`` without a purpose;
    an in-session challenge for a purpose asks again with it. Both come from here, so the
    ticket and the broker cannot disagree."""
    return decide_smart_card(region, directory, Purpose.IN_SESSION, client=client,
                             protocol=protocol, os=os, detail=detail)


def client_of(recorded: object) -> ClientInfo | _Unknown:
    """The client a login recorded (a ``{"platform", "arch", "version"}`` mapping, as stored),
    or :data:`UNKNOWN_CLIENT` for anything else (None, junk)."""
    if isinstance(recorded, dict):
        fields = [recorded.get(k) for k in ("platform", "arch", "version")]
        if all(isinstance(f, str) for f in fields):
            return ClientInfo(*fields)  # type: ignore[arg-type]
    return UNKNOWN_CLIENT


@dataclass(frozen=True)
class LoginOffer:
    methods: tuple[str, ...]
    pre_session: Decision
    in_session: Decision


def login_methods(region: RegionEntry, directory: DirectorySettings, client: ClientInfo,
                  card_count: int | None = None) -> LoginOffer:
    """What the login page offers: "smart_card" ("Insert your smart card") only when the
    pre-session Decision allows it, "password" where the directory enables it; and whether
    this client's sessions may use the card inside the WorkSpace."""
    pre = decide_smart_card(region, directory, Purpose.PRE_SESSION, client=client,
                            card_count=card_count)
    inside = decide_smart_card(region, directory, Purpose.IN_SESSION, client=client)
    methods = (("smart_card",) if pre.allowed else ()) + \
        (("password",) if directory.password_login else ())
    return LoginOffer(methods, pre, inside)
