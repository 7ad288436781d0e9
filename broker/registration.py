"""Registration codes: ``<PREFIX>+<BODY>``, pure (generate, parse, normalise, check).

PREFIX names the region (config/regions.toml, e.g. ``SLgovw`` for us-gov-west-1). BODY is ten
Crockford base32 characters (``0-9 A-Z`` without ``I L O U``); the last is a check character, so
a typo is told apart from a well-formed code that was never issued.

The check character
    Each body character is its Crockford value 0..31; each prefix letter contributes
    ``ord(lower(letter)) mod 32``. Treating the values as elements of GF(2^5) (polynomial
    x^5 + x^2 + 1, generator α = x), the check value c makes
    ``c + Σ α^(i+1) · v_i = 0`` over the prefix letters followed by the first nine body
    characters. Because α has order 31 and every non-zero element is invertible, this detects
    EVERY single-character substitution and EVERY transposition of two adjacent characters of
    the body (including the check character) — tested exhaustively in tests/unit.

Input is forgiving: case-insensitive, whitespace anywhere and hyphens inside the body are
ignored, and Crockford's aliases are accepted (O → 0, I and L → 1). A prefix that names no region
of the catalogue is ``registration_code_malformed`` (it cannot be a code we issued: a typo).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from broker.codes import Code
from broker.errors import BrokerError

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUE = {c: i for i, c in enumerate(ALPHABET)}
_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1"})
BODY_LEN = 10
_POLY = 0b100101  # x^5 + x^2 + 1, primitive over GF(2)
_PREFIX_RE = re.compile(r"^[A-Za-z]{2,12}$")


class RegistrationCodeError(BrokerError):
    code = Code.REGISTRATION_CODE_MALFORMED


def _gf_mul(a: int, b: int) -> int:
    out = 0
    while b:
        if b & 1:
            out ^= a
        b >>= 1
        a <<= 1
        if a & 0b100000:
            a ^= _POLY
    return out


_POW = [1]
for _ in range(40):
    _POW.append(_gf_mul(_POW[-1], 2))


def check_character(prefix: str, body9: str) -> str:
    """The check character for ``prefix`` and the first nine body characters."""
    values = [ord(c) % 32 for c in prefix.lower()] + [_VALUE[c] for c in body9]
    total = 0
    for i, v in enumerate(values):
        total ^= _gf_mul(_POW[(i + 1) % 31], v)
    return ALPHABET[total]


@dataclass(frozen=True)
class RegistrationCode:
    prefix: str
    body: str

    def __str__(self) -> str:
        return f"{self.prefix}+{self.body}"

    @property
    def lookup_key(self) -> str:
        """Canonical upper-case form, the key stored in the database."""
        return f"{self.prefix.upper()}+{self.body}"


def generate(prefix: str) -> RegistrationCode:
    """A new random code for ``prefix`` (45 random bits plus the check character)."""
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"registration-code prefix must be 2-12 letters, not {prefix!r}")
    body9 = "".join(secrets.choice(ALPHABET) for _ in range(BODY_LEN - 1))
    return RegistrationCode(prefix, body9 + check_character(prefix, body9))


def normalise(text: str) -> tuple[str, str]:
    """(prefix, body) in canonical form, or RegistrationCodeError for a bad shape."""
    if not isinstance(text, str) or len(text) > 200:
        raise RegistrationCodeError(message="A registration code looks like SLiad+ABCDE12345.")
    compact = re.sub(r"\s+", "", text)
    if compact.count("+") != 1:
        raise RegistrationCodeError(message="A registration code looks like PREFIX+BODY, e.g. "
                                            "SLiad+ABCDE12345.")
    prefix, body = compact.split("+")
    body = body.replace("-", "").upper().translate(_ALIASES)
    if not _PREFIX_RE.match(prefix):
        raise RegistrationCodeError(message="The part before '+' must be the region's letters.")
    if len(body) != BODY_LEN or any(c not in _VALUE for c in body):
        raise RegistrationCodeError(message=f"The part after '+' must be {BODY_LEN} letters and "
                                            "digits.")
    return prefix, body


def parse(text: str, catalogue: Any = None) -> RegistrationCode:
    """Parse and check a code typed by a user.

    Raises RegistrationCodeError (registration_code_malformed) for a bad shape, a wrong check
    character, or — when ``catalogue`` is given — a prefix that names no region.
    """
    prefix, body = normalise(text)
    if catalogue is not None:
        entry = catalogue.by_prefix(prefix)
        if entry is None:
            raise RegistrationCodeError(message="This registration code names no known region; "
                                                "check it for typos.")
        prefix = entry.prefix
    if check_character(prefix, body[:-1]) != body[-1]:
        raise RegistrationCodeError(message="This registration code has a typo: its check "
                                            "character does not match.")
    return RegistrationCode(prefix, body)


def is_usable(state: str, revoked_at: datetime | None, rotated_at: datetime | None,
              grace: timedelta, now: datetime) -> str:
    """"ok", "revoked", or "rotated_expired" (a rotated code works until the grace ends).

    ``state`` is the stored state (active|rotated|revoked). Revocation wins over rotation; a
    rotated code with no rotation time is treated as past its grace. Both "revoked" and
    "rotated_expired" mean ``registration_code_revoked`` to the caller.
    """
    if state == "revoked" or revoked_at is not None:
        return "revoked"
    if state == "rotated" or rotated_at is not None:
        if rotated_at is None or now >= rotated_at + grace:
            return "rotated_expired"
    return "ok"
