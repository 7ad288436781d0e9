"""One facade over whatever card is in the reader: list certificates, PIN, sign.

The login flow talks only to :class:`SmartCard`. A PIV card (or a CAC carrying a PIV applet —
the dual-interface case) is driven through :class:`~broker.client.piv.PivSession`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from broker.client.errors import ApduError, CardError
from broker.client.piv import KeyType, PivSession, Slot


@dataclass(frozen=True)
class CardCertificate:
    slot_id: str
    label: str
    certificate: x509.Certificate


class SmartCard:
    def __init__(self, connection: Any) -> None:
        self.connection = connection
        try:
            self.piv = PivSession(connection)
        except ApduError as exc:
            raise CardError("card_not_supported", "This card has no PIV application.") from exc
        self.kind = "piv"

    @property
    def atr(self) -> bytes:
        return bytes(getattr(self.connection, "atr", b""))

    def certificates(self) -> list[CardCertificate]:
        out = []
        for slot in Slot:
            cert = self.piv.read_certificate(slot)
            if cert is not None:
                out.append(CardCertificate(f"{slot.value:02x}", slot.label, cert))
        return out

    def verify_pin(self, pin: str) -> None:
        self.piv.verify_pin(pin)

    def pin_attempts_remaining(self) -> int:
        return self.piv.pin_attempts_remaining()

    def sign(self, slot_id: str, data: bytes, algorithm: str) -> bytes:
        slot = Slot(int(slot_id, 16))
        cert = self.piv.read_certificate(slot)
        if cert is None:
            raise CardError("card_no_certificate", f"slot {slot_id} holds no certificate")
        return self.piv.sign(slot, KeyType.of(cert.public_key()), data, algorithm)

    @staticmethod
    def default_algorithm(cert: x509.Certificate) -> str:
        key = cert.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey):
            return "ecdsa-sha384" if key.curve.key_size >= 384 else "ecdsa-sha256"
        return "rsa-pkcs1-sha256"

    @staticmethod
    def filter_by_issuers(certs: Sequence[CardCertificate],
                          accepted_issuer_dns: Sequence[str]) -> list[CardCertificate]:
        """Certificates whose issuer the directory accepts (all of them if it names none)."""
        if not accepted_issuer_dns:
            return list(certs)
        accepted = set(accepted_issuer_dns)
        return [c for c in certs if c.certificate.issuer.rfc4514_string() in accepted]


def open_card(connection: Any) -> SmartCard:
    return SmartCard(connection)
