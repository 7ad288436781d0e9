"""Wire encodings of the client API: base64 fields, RFC 3339 times, certificates as DER.

Every certificate that arrives over the API is parsed and re-encoded as DER before anything is
derived from it, so one certificate has exactly one fingerprint (SHA-256 of its DER) whatever
the client sent — lockouts, audit and token bindings all name the same thing. PEM text inside
the base64 is refused with a clear message instead of being fingerprinted as raw bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from broker.codes import Code
from broker.service.errors import ServiceError

#: Largest certificate accepted from a client (a PIV certificate is 1–2 KiB).
MAX_CERT_BYTES = 16 * 1024


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def decode_b64(value: str, code: str, what: str) -> bytes:
    """Standard or url-safe base64, padded or not; ServiceError ``code`` when it is not."""
    text = value.strip()
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ServiceError(code, f"The {what} is not valid base64.") from None


def cert_fingerprint(der: bytes) -> str:
    """SHA-256 of a certificate's DER, hex (what audit, lockouts and tokens name)."""
    return hashlib.sha256(der).hexdigest()


def der_certificate(value: str, what: str = "certificate") -> bytes:
    """The DER of a base64 certificate field; certificate_malformed for PEM, junk or oversize."""
    raw = decode_b64(value, "certificate_malformed", what)
    if len(raw) > MAX_CERT_BYTES:
        raise ServiceError(Code.CERTIFICATE_MALFORMED, f"The {what} is too large.")
    if raw.lstrip().startswith(b"-----BEGIN"):
        raise ServiceError(Code.CERTIFICATE_MALFORMED,
                           f"The {what} must be base64 of its DER encoding, not PEM text.")
    try:
        cert = x509.load_der_x509_certificate(raw)
        return cert.public_bytes(serialization.Encoding.DER)
    except ValueError:
        raise ServiceError(Code.CERTIFICATE_MALFORMED, f"The {what} is not a DER X.509 "
                                                    "certificate.") from None
