"""Password hashes: scrypt with a random salt, compared in constant time.

Format: ``scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>`` so parameters can be raised later
without invalidating stored hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_LOG2_N, _R, _P, _LEN = 14, 8, 1, 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2 ** _LOG2_N, r=_R, p=_P,
                            dklen=_LEN, maxmem=64 * 1024 * 1024)
    return f"scrypt${_LOG2_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """True when ``password`` matches ``stored``; a missing or malformed hash never matches.

    When there is no stored hash a dummy hash is still computed, so response time does not
    reveal whether a user exists.
    """
    try:
        scheme, log2n, r, p, salt_b64, digest_b64 = (stored or "").split("$")
        if scheme != "scrypt":
            raise ValueError(scheme)
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(digest_b64, validate=True)
        n, r_i, p_i = 2 ** int(log2n), int(r), int(p)
        if not (salt and 16 <= len(expected) <= 64 and 10 <= int(log2n) <= 20
                and 1 <= r_i <= 32 and 1 <= p_i <= 16):
            raise ValueError("parameters out of range")
    except ValueError:
        salt, expected, n, r_i, p_i = b"\0" * 16, b"\1" * _LEN, 2 ** _LOG2_N, _R, _P
        stored = None
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r_i, p=p_i,
                            dklen=len(expected), maxmem=64 * 1024 * 1024)
    return hmac.compare_digest(digest, expected) and stored is not None
