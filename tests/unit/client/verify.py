"""Check a card's signature the way the broker does: by algorithm name, with cryptography."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384}


def verify(certificate: x509.Certificate, signature: bytes, data: bytes, algorithm: str) -> None:
    """InvalidSignature unless ``signature`` is right."""
    family, _, hash_name = algorithm.rpartition("-")
    h = HASHES[hash_name]()
    pub = certificate.public_key()
    if family == "ecdsa":
        assert isinstance(pub, ec.EllipticCurvePublicKey)
        pub.verify(signature, data, ec.ECDSA(h))
    elif family == "rsa-pkcs1":
        assert isinstance(pub, rsa.RSAPublicKey)
        pub.verify(signature, data, padding.PKCS1v15(), h)
    else:
        assert family == "rsa-pss"
        assert isinstance(pub, rsa.RSAPublicKey)
        pub.verify(signature, data, padding.PSS(padding.MGF1(h), h.digest_size), h)
