"""Opaque bearer tokens (auth tokens for clients, admin tokens): random, stored as SHA-256.

A token is ``<prefix>_<43 url-safe chars>`` (256 bits). Only its SHA-256 is stored, so a database
leak does not leak usable tokens; lookups hash the presented value and compare in the database,
and the final equality check is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def new_id(nbytes: int) -> str:
    """A random url-safe id (sessions, challenges) that never starts with "-": an id is typed
    as a command-line argument (`broker admin sessions terminate ID`), where a leading dash
    reads as an option."""
    while (value := secrets.token_urlsafe(nbytes)).startswith("-"):
        pass
    return value


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def hashes_match(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(token_hash(token), stored_hash)


def fingerprint(token: str) -> str:
    """A short, non-reversible name for a token, safe for logs."""
    return token_hash(token)[:12]
