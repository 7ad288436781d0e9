"""One facade over whatever card is in the reader: list certificates, PIN, sign.

The login flow talks only to :class:`SmartCard`. A PIV card — or a CAC that also carries a PIV
application (dual interface) — is driven through :class:`~broker.client.piv.PivSession`; a CAC
without PIV through :class:`~broker.client.cac.CacSession`. Any other card can go through its
PKCS#11 module (:func:`open_any_card`, :mod:`broker.client.pkcs11card`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from broker.client.apdu import ApduProtocol, Connection
from broker.client.cac import CacSession, PkiApplet
from broker.client.errors import ApduError, NotSupportedError
from broker.client.piv import Chuid, KeyType, PivSession, SignatureAlgorithm, Slot


@dataclass(frozen=True)
class CardCertificate:
    slot_id: str  # "9a", "9c", "9d", "9e" on PIV; "cac0", "cac1", "cac2" on CAC
    label: str
    certificate: x509.Certificate


class CertificateChoice:
    """What every card facade offers the login flow about its certificates (PIV, CAC and the
    PKCS#11 fallback alike)."""

    @staticmethod
    def default_algorithm(cert: x509.Certificate) -> str:
        """EC P-384 → ecdsa-sha384, other EC → ecdsa-sha256, RSA → rsa-pkcs1-sha256."""
        return default_algorithm(cert)

    @staticmethod
    def filter_by_issuers(certs: Sequence[CardCertificate],
                          accepted_issuer_dns: Sequence[str]) -> list[CardCertificate]:
        return filter_by_issuers(certs, accepted_issuer_dns)


class SmartCard(CertificateChoice):
    """A PIV or CAC card. ``kind`` is "piv" or "cac"; ``piv``/``cac`` is the session in use."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.protocol = ApduProtocol(connection)
        self.piv: PivSession | None = None
        self.cac: CacSession | None = None
        self._key_types: dict[str, KeyType] = {}  # from certificates(): sign needs no re-read
        try:
            self.piv = PivSession(connection, self.protocol)
            self.kind = "piv"
        except ApduError:
            self.cac = CacSession(connection, self.protocol)  # NotSupportedError if not CAC
            self.kind = "cac"

    @property
    def atr(self) -> bytes:
        return bytes(getattr(self.connection, "atr", b""))

    def read_chuid(self) -> Chuid | None:
        """The CHUID (FASC-N, card UUID, expiry) on a PIV card; None on CAC."""
        return self.piv.read_chuid() if self.piv else None

    def certificates(self) -> list[CardCertificate]:
        """Every certificate on the card, with the slot (or CAC applet) holding its key."""
        certs = self._read_certificates()
        for c in certs:
            try:
                self._key_types[c.slot_id] = KeyType.of(c.certificate.public_key())
            except NotSupportedError:
                self._key_types.pop(c.slot_id, None)
        return certs

    def _read_certificates(self) -> list[CardCertificate]:
        if self.piv is not None:
            out = []
            for slot in Slot:
                cert = self.piv.read_certificate(slot)
                if cert is not None:
                    out.append(CardCertificate(slot.slot_id, slot.label, cert))
            return out
        assert self.cac is not None
        return [CardCertificate(c.applet.slot_id, c.applet.label, c.certificate)
                for c in self.cac.certificates()]

    def verify_pin(self, pin: str) -> None:
        """InvalidPinError(attempts_remaining), PinBlockedError, PinFormatError."""
        self._session.verify_pin(pin)

    def pin_attempts_remaining(self) -> int:
        return self._session.pin_attempts_remaining()

    def change_pin(self, old: str, new: str) -> None:
        """InvalidPinError(attempts_remaining), PinBlockedError, PinFormatError."""
        self._session.change_pin(old, new)

    def unblock_pin(self, puk: str, new: str) -> None:
        """InvalidPukError(attempts_remaining), PukBlockedError, PinFormatError."""
        self._session.unblock_pin(puk, new)

    def sign(self, slot_id: str, data: bytes, algorithm: str) -> bytes:
        """Sign ``data`` with the key behind certificate ``slot_id`` under a broker algorithm
        name; NotSupportedError for an unknown slot or algorithm, PinRequiredError."""
        SignatureAlgorithm.parse(algorithm)
        if self.piv is not None:
            try:
                slot = Slot(int(slot_id, 16))
            except ValueError:
                raise NotSupportedError("card_no_certificate",
                                        f"No PIV slot {slot_id!r}.") from None
            return self.piv.sign(slot, data, algorithm, self._key_types.get(slot.slot_id))
        assert self.cac is not None
        applet = PkiApplet.from_slot_id(slot_id)
        return self.cac.sign(applet, data, algorithm, self._key_types.get(applet.slot_id))

    @property
    def _session(self) -> PivSession | CacSession:
        session = self.piv or self.cac
        assert session is not None
        return session



def default_algorithm(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return (SignatureAlgorithm.ECDSA_SHA384 if key.curve.key_size >= 384
                else SignatureAlgorithm.ECDSA_SHA256)
    return SignatureAlgorithm.RSA_PKCS1_SHA256


def filter_by_issuers(certs: Sequence[CardCertificate],
                      accepted_issuer_dns: Sequence[str]) -> list[CardCertificate]:
    """Certificates whose issuer DN (RFC 4514) the directory accepts (all if it names none)."""
    if not accepted_issuer_dns:
        return list(certs)
    accepted = set(accepted_issuer_dns)
    return [c for c in certs if c.certificate.issuer.rfc4514_string() in accepted]


def open_card(connection: Connection) -> SmartCard:
    """Detect PIV (preferred, also on a dual CAC) or CAC; NotSupportedError for other cards."""
    return SmartCard(connection)
