"""Cards that are neither PIV nor CAC, through the card's PKCS#11 module (OpenSC's).

The reference says other types of smart cards might also work. The client does not speak their
protocols itself: it hands the reader over to OpenSC's ``opensc-pkcs11.so`` (through the
python-pkcs11 binding) and drives the card with C_Login and C_Sign. The facade is the same as
:class:`~broker.client.card.SmartCard`'s, so the login flow cannot tell the difference:

- certificates: every X.509 certificate object of the reader's token, its ``CKA_ID`` (hex) as
  the slot id; the private key is the one with the same ``CKA_ID``;
- PIN: C_Login as the user (a new session each time, so a second PIN really is verified again);
- signing: the client hashes; ECDSA keys sign with ``CKM_ECDSA`` and the ``r || s`` answer is
  DER-encoded, RSA keys sign the DigestInfo with ``CKM_RSA_PKCS`` (PKCS#1 v1.5): exactly what
  the PIV path produces, so the broker verifies it unchanged.

PC/SC sharing: the caller releases its own pyscard connection before this opens the reader.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from broker.client.card import CardCertificate, CertificateChoice
from broker.client.errors import (
    CardError,
    CardStackMissingError,
    InvalidPinError,
    NoCardError,
    NotSupportedError,
    PinBlockedError,
    PinFormatError,
    PinRequiredError,
)
from broker.client.piv import SignatureAlgorithm

# DER DigestInfo prefixes (RFC 8017 §9.2 note 1)
DIGEST_INFO = {"sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
               "sha384": bytes.fromhex("3041300d060960864801650304020205000430")}

#: The one line a user reads when the fallback is taken.
UNTESTED_WARNING = ("warning: this card is neither PIV nor CAC; using it through its PKCS#11 "
                    "module ({token}): this card type is not fully tested "
                    "(--strict-card-types refuses it)")


class WrongPinError(InvalidPinError):
    """A wrong PIN on a card whose module does not say how many tries are left (code
    ``card_pin_invalid`` as on PIV and CAC)."""

    def __init__(self, attempts_remaining: int | None) -> None:
        if attempts_remaining is not None:
            super().__init__(attempts_remaining)
            return
        CardError.__init__(self, message="Wrong PIN: the card does not say how many attempts "
                                         "are left before it blocks.", details={})
        self.attempts_remaining = -1


def _pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError:
        raise CardStackMissingError(message="python-pkcs11 is not installed: pip install "
                                            "'smartcard-broker[card]'") from None
    return pkcs11


def _module_path(module: str | None) -> str:
    if module:
        return module
    from broker.client.nss import find_opensc_module

    return find_opensc_module()


def _matches(description: str, reader: str) -> bool:
    """OpenSC names each slot after its PC/SC reader (cut to the field's 64 characters)."""
    description, reader = description.strip(), reader.strip()
    return bool(description) and (description == reader or reader.startswith(description)
                                  or description.startswith(reader))


class Pkcs11Card(CertificateChoice):
    """A card behind a PKCS#11 token, with the :class:`SmartCard` facade (``kind`` "pkcs11")."""

    kind = "pkcs11"

    def __init__(self, reader: str, atr: bytes = b"", module: str | None = None) -> None:
        p11 = _pkcs11()
        self._p11 = p11
        self.reader = reader
        self._atr = atr
        path = _module_path(module)
        try:
            lib = p11.lib(path)
            if not getattr(lib, "initialized", True):
                lib.initialize()
            # every slot of the reader: OpenSC shows a card it does not know as no token
            slots = [s for s in lib.get_slots() if _matches(s.slot_description, reader)]
        except p11.PKCS11Error as exc:
            raise CardError("card_pkcs11_error", f"The PKCS#11 module {path} failed: "
                                                 f"{type(exc).__name__}.") from None
        tokens = []
        for slot in slots:
            try:
                tokens.append(slot.get_token())
            except p11.PKCS11Error:
                continue  # no token, or one OpenSC does not recognize
        if not slots:
            raise NoCardError(message=f"The PKCS#11 module finds no reader {reader}.")
        if not tokens:
            raise NotSupportedError(message="This card has neither a PIV application nor CAC "
                                            "PKI applets, and OpenSC does not know it either.")
        # OpenSC gives a card one slot per PIN; the first is the user PIN that the
        # authentication key needs.
        self.token = tokens[0]
        self._session: Any = None
        self._logged_in = False

    # ------------------------------------------------------------------ facade
    @property
    def connection(self) -> Pkcs11Card:
        """What LoginResult.close() disconnects: the PKCS#11 session."""
        return self

    @property
    def token_label(self) -> str:
        return str(self.token.label).strip()

    @property
    def atr(self) -> bytes:
        return self._atr

    def disconnect(self) -> None:
        session, self._session = self._session, None
        self._logged_in = False
        if session is not None:
            try:
                session.close()
            except self._p11.PKCS11Error:
                pass  # the card is already gone: nothing to release

    def read_chuid(self) -> None:
        return None  # a PIV data object: other cards have none

    def pin_attempts_remaining(self) -> int | None:
        flags = self.token.flags
        tf = self._p11.TokenFlag
        if flags & tf.USER_PIN_LOCKED:
            return 0
        if flags & tf.USER_PIN_FINAL_TRY:
            return 1
        return None  # PKCS#11 says only "low" or "final try"

    def _open(self) -> Any:
        if self._session is None:
            self._session = self._call(self.token.open)
        return self._session

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        p11 = self._p11
        try:
            return fn(*args, **kw)
        except (p11.TokenNotPresent, p11.DeviceRemoved, p11.SessionClosed,
                p11.SessionHandleInvalid):
            raise NoCardError(message=f"The card in {self.reader} was removed.") from None
        except p11.PKCS11Error as exc:
            raise CardError("card_pkcs11_error",
                            f"The card's PKCS#11 module refused: {type(exc).__name__}.") from None

    def certificates(self) -> list[CardCertificate]:
        p11 = self._p11
        session = self._open()
        out = []
        objs = self._call(lambda: list(session.get_objects(
            {p11.Attribute.CLASS: p11.ObjectClass.CERTIFICATE})))
        for obj in objs:
            try:
                cert = x509.load_der_x509_certificate(bytes(obj[p11.Attribute.VALUE]))
                key_id = bytes(obj[p11.Attribute.ID])
                label = str(obj[p11.Attribute.LABEL]) or cert.subject.rfc4514_string()
            except (ValueError, p11.PKCS11Error):
                continue  # not an X.509 certificate this client can use
            out.append(CardCertificate(key_id.hex(), label, cert))
        return out

    def verify_pin(self, pin: str) -> None:
        """C_Login as the user in a fresh session: InvalidPinError, PinBlockedError,
        PinFormatError."""
        p11 = self._p11
        self.disconnect()  # closing the last session logs out: the PIN is checked again
        try:
            self._session = self.token.open(user_pin=pin)
        except p11.PinIncorrect:
            raise WrongPinError(self.pin_attempts_remaining()) from None
        except p11.PinLocked:
            raise PinBlockedError() from None
        except (p11.PinLenRange, p11.PinInvalid):
            raise PinFormatError(message="The PIN has the wrong length or characters for this "
                                         "card.") from None
        except (p11.TokenNotPresent, p11.DeviceRemoved):
            raise NoCardError(message=f"The card in {self.reader} was removed.") from None
        except p11.PKCS11Error as exc:
            raise CardError("card_pkcs11_error",
                            f"The card's PKCS#11 module refused the PIN: "
                            f"{type(exc).__name__}.") from None
        self._logged_in = True

    def change_pin(self, old: str, new: str) -> None:
        raise NotSupportedError(message="Changing the PIN of this card type is left to its own "
                                        "tools (e.g. pkcs11-tool --change-pin).")

    def unblock_pin(self, puk: str, new: str) -> None:
        raise NotSupportedError(message="Unblocking the PIN of this card type is left to its "
                                        "own tools (e.g. pkcs11-tool --unlock-pin).")

    def sign(self, slot_id: str, data: bytes, algorithm: str) -> bytes:
        """Sign with the private key whose CKA_ID is ``slot_id`` (hex) under a broker
        algorithm name; PinRequiredError before verify_pin."""
        p11 = self._p11
        alg = SignatureAlgorithm.parse(algorithm)
        if alg.family not in ("ecdsa", "rsa-pkcs1"):
            raise NotSupportedError(message=f"{alg.value} is not offered for this card type.")
        if not self._logged_in:
            raise PinRequiredError()
        try:
            key_id = bytes.fromhex(slot_id)
        except ValueError:
            raise NotSupportedError("card_no_certificate",
                                    f"No key with ID {slot_id!r} on this card.") from None
        session = self._open()
        keys = self._call(lambda: list(session.get_objects({
            p11.Attribute.CLASS: p11.ObjectClass.PRIVATE_KEY, p11.Attribute.ID: key_id})))
        if not keys:
            raise NotSupportedError("card_no_certificate",
                                    f"The card holds no private key with ID {slot_id}.")
        digest = hashlib.new(alg.hash_name, data).digest()
        try:
            if alg.family == "ecdsa":
                raw = keys[0].sign(digest, mechanism=p11.Mechanism.ECDSA)
                half = len(raw) // 2
                return encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                            int.from_bytes(raw[half:], "big"))
            return bytes(keys[0].sign(DIGEST_INFO[alg.hash_name] + digest,
                                      mechanism=p11.Mechanism.RSA_PKCS))
        except p11.UserNotLoggedIn:
            raise PinRequiredError() from None
        except (p11.TokenNotPresent, p11.DeviceRemoved):
            raise NoCardError(message=f"The card in {self.reader} was removed.") from None
        except p11.PKCS11Error as exc:
            raise CardError("card_pkcs11_error",
                            f"The card refused to sign: {type(exc).__name__}.") from None
