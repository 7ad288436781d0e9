"""Test keys and certificates for the client tests, made once per run with cryptography."""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

KINDS = ("rsa-2048", "ec-p256", "ec-p384")


def key(kind: str, n: int = 0) -> Any:
    """A private key per (kind, n), the same object on every call."""
    return _key(kind, n)  # one cache key however the caller spells the arguments


@cache
def _key(kind: str, n: int) -> Any:
    if kind == "rsa-2048":
        return rsa.generate_private_key(65537, 2048)
    return ec.generate_private_key({"ec-p256": ec.SECP256R1(), "ec-p384": ec.SECP384R1()}[kind])


def cert(kind: str, n: int = 0, issuer: str = "Client Test CA") -> x509.Certificate:
    """A certificate for key(kind, n) named "<kind> user <n>", issued by ``issuer`` (whose key
    is a fixed EC key: the client never checks the chain)."""
    return _cert(kind, n, issuer)


@cache
def _cert(kind: str, n: int, issuer: str) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{kind} user {n}")])
    issuer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
            .public_key(key(kind, n).public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .sign(key("ec-p256", 99), hashes.SHA256()))
