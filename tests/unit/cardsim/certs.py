"""Test-only keys and self-issued certificates for the simulated cards (built with cryptography)."""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


def key(kind: str, n: int = 0) -> Any:
    """A private key per (kind, n), made once per test run: rsa-2048, ec-p256, ec-p384."""
    return _key(kind, n)


@cache
def _key(kind: str, n: int) -> Any:
    if kind.startswith("rsa-"):
        return rsa.generate_private_key(65537, int(kind[4:]))
    return ec.generate_private_key({"ec-p256": ec.SECP256R1(), "ec-p384": ec.SECP384R1()}[kind])


def cert(kind: str, n: int = 0, cn: str = "card.test") -> x509.Certificate:
    """A self-signed certificate for key(kind, n), the same object on every call."""
    return _cert(kind, n, cn)


@cache
def _cert(kind: str, n: int, cn: str) -> x509.Certificate:
    k = key(kind, n)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{cn} {n}")])
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(k.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .sign(k, hashes.SHA256()))
