"""Checking a challenge signature made by a card, with the algorithm bound to the key type.

Algorithm names are a contract with clients: ``rsa-pkcs1-sha256``, ``rsa-pkcs1-sha384``,
``rsa-pss-sha256``, ``rsa-pss-sha384`` (salt length = digest length), ``ecdsa-sha256``,
``ecdsa-sha384`` (DER-encoded ECDSA signatures). Anything else, a mismatch between algorithm and
key, or any malformed input is ``signature_invalid`` — never an exception of another kind.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from broker.codes import Code
from broker.pki.errors import PkiError

SUPPORTED_SIGNATURE_ALGORITHMS = ("ecdsa-sha256", "ecdsa-sha384", "rsa-pkcs1-sha256",
                                  "rsa-pkcs1-sha384", "rsa-pss-sha256", "rsa-pss-sha384")
_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384}
MAX_SIGNATURE_BYTES = 1024


def _invalid(why: str) -> PkiError:
    return PkiError(Code.SIGNATURE_INVALID, f"The signature does not verify: {why}.")


def verify_signature(key_or_cert: Any, data: bytes, signature: bytes, algorithm: str) -> None:
    """Raise PkiError(Code.SIGNATURE_INVALID) unless ``signature`` over ``data`` verifies."""
    if algorithm not in SUPPORTED_SIGNATURE_ALGORITHMS:
        raise _invalid(f"unsupported algorithm {str(algorithm)[:40]!r}")
    if not isinstance(signature, bytes | bytearray) or not 0 < len(signature) <= \
            MAX_SIGNATURE_BYTES:
        raise _invalid("empty or oversized signature")
    key = key_or_cert.public_key() if isinstance(key_or_cert, x509.Certificate) else key_or_cert
    family, _, hash_name = algorithm.rpartition("-")
    digest = _HASHES[hash_name]()
    try:
        if family == "ecdsa":
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise _invalid("an ECDSA algorithm with a non-EC key")
            key.verify(bytes(signature), data, ec.ECDSA(digest))
        else:
            if not isinstance(key, rsa.RSAPublicKey):
                raise _invalid("an RSA algorithm with a non-RSA key")
            pad = (padding.PSS(padding.MGF1(digest), digest.digest_size)
                   if family == "rsa-pss" else padding.PKCS1v15())
            key.verify(bytes(signature), data, pad, digest)
    except InvalidSignature:
        raise _invalid("wrong key or altered data") from None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise _invalid("malformed signature") from None
