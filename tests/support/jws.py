"""An independent ES256 JWS check with nothing but `cryptography` (RFC 7515/7518 by hand), so
tickets are not verified only by the JOSE library that signs them."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def _b64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_es256(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """The claims of a compact ES256 JWS signed by a key of ``jwks``; ValueError otherwise."""
    head_b64, body_b64, sig_b64 = token.split(".")
    header = json.loads(_b64u(head_b64))
    if header.get("alg") != "ES256":
        raise ValueError(f"unexpected alg {header.get('alg')!r}")
    keys = [k for k in jwks["keys"] if k.get("kid") == header.get("kid")]
    if len(keys) != 1:
        raise ValueError("no single key with the token's kid")
    jwk = keys[0]
    if (jwk.get("kty"), jwk.get("crv")) != ("EC", "P-256") or "d" in jwk:
        raise ValueError("not a public P-256 JWK")
    public = ec.EllipticCurvePublicNumbers(int.from_bytes(_b64u(jwk["x"]), "big"),
                                           int.from_bytes(_b64u(jwk["y"]), "big"),
                                           ec.SECP256R1()).public_key()
    raw = _b64u(sig_b64)
    if len(raw) != 64:
        raise ValueError("an ES256 signature is 64 bytes (r || s)")
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        public.verify(der, f"{head_b64}.{body_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ValueError("bad signature") from None
    return dict(json.loads(_b64u(body_b64)))
