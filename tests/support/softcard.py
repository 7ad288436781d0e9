"""A software "card" (key in memory) and a client that drives the broker's login protocol.

The card-backed client (broker.client) must speak exactly this protocol; these helpers let the
login, session and admin tests run over real TLS without PC/SC.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from tests.support.server import ApiClient, Response

WINDOWS = {"platform": "windows", "arch": "x86_64", "version": "3.1.1"}


@dataclass
class SoftCard:
    key: Any
    cert: x509.Certificate
    chain: list[x509.Certificate] = field(default_factory=list)

    @property
    def algorithm(self) -> str:
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return "ecdsa-sha384" if self.key.curve.key_size >= 384 else "ecdsa-sha256"
        return "rsa-pkcs1-sha256"

    def sign(self, data: bytes, algorithm: str | None = None) -> bytes:
        alg = algorithm or self.algorithm
        digest = hashes.SHA384() if alg.endswith("384") else hashes.SHA256()
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return self.key.sign(data, ec.ECDSA(digest))
        assert isinstance(self.key, rsa.RSAPrivateKey)
        if alg.startswith("rsa-pss"):
            return self.key.sign(data, padding.PSS(padding.MGF1(digest), digest.digest_size),
                                 digest)
        return self.key.sign(data, padding.PKCS1v15(), digest)

    def cert_b64(self) -> str:
        return base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()

    def chain_b64(self) -> list[str]:
        return [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
                for c in self.chain]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class SoftClient:
    api: ApiClient
    code: str
    client: dict[str, str] = field(default_factory=lambda: dict(WINDOWS))

    def register(self) -> Response:
        return self.api.post("/v1/registrations", {"registration_code": self.code,
                                                   "client": self.client})

    def challenge(self, card_count: int = 1) -> Response:
        return self.api.post("/v1/auth/challenges", {"registration_code": self.code,
                                                     "client": self.client,
                                                     "card_count": card_count,
                                                     "purpose": "pre_session"})

    def respond(self, challenge: dict[str, Any], card: SoftCard,
                algorithm: str | None = None, signature: bytes | None = None) -> Response:
        tbs = base64.b64decode(challenge["to_be_signed"])
        sig = signature if signature is not None else card.sign(tbs, algorithm)
        return self.api.post(f"/v1/auth/challenges/{challenge['challenge_id']}/response",
                             {"certificate": card.cert_b64(), "chain": card.chain_b64(),
                              "signature": b64(sig), "algorithm": algorithm or card.algorithm})

    def login(self, card: SoftCard) -> Response:
        ch = self.challenge()
        assert ch.status == 201, ch.body
        return self.respond(ch.body, card)

    def connect(self, token: str, workspace_id: str) -> Response:
        return self.api.post(f"/v1/workspaces/{workspace_id}/connect", {}, token=token)

    def open_session(self, token: str, workspace_id: str, card: SoftCard | None = None,
                     timeout_s: float = 20.0) -> Response:
        """Connect and, for a card login (202 with a logon challenge: the PIN again at
        "Starting WorkSpace"), sign it with ``card`` and poll the logon until the WorkSpace is
        AVAILABLE; a password login's 202 is polled by connecting again. The last Response."""
        import time

        deadline = time.monotonic() + timeout_s
        r = self.connect(token, workspace_id)
        while r.status == 202:
            challenge = r.body.get("logon_challenge")
            if challenge is not None:
                assert card is not None, "a card login's connect asks for the card again"
                r = self.logon(token, workspace_id, challenge, card)
                while r.status == 409 and r.code == "workspace_not_ready":
                    assert time.monotonic() < deadline, "the WorkSpace did not start in time"
                    time.sleep(0.2)
                    r = self.logon(token, workspace_id, challenge, card)
                return r
            assert time.monotonic() < deadline, "the WorkSpace did not start in time"
            time.sleep(0.2)
            r = self.connect(token, workspace_id)
        return r

    def logon(self, token: str, workspace_id: str, challenge: dict[str, Any],
              card: SoftCard) -> Response:
        sig = card.sign(base64.b64decode(challenge["to_be_signed"]))
        return self.api.post(f"/v1/workspaces/{workspace_id}/logon",
                             {"challenge_id": challenge["challenge_id"], "signature": b64(sig),
                              "algorithm": card.algorithm}, token=token)
