"""Fuzz targets: every parser that reads outside input, fed arbitrary bytes.

Each target takes ``bytes`` and returns whether the parser accepted them (True) or refused
them with its layer's error (False; a :class:`~broker.errors.BrokerError` subclass with a stable
code). Any other exception is a crash: the CI tests (tests/fuzz/test_parsers.py) and the long run
(bench/fuzz_parsers.py) both report it.

``seeds()`` holds a valid input per target, which its target must accept, so mutation-based runs
start from something each parser accepts and reach past its first length check.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections.abc import Callable
from functools import cache
from io import BytesIO
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from broker import registration
from broker.cardsim import CacCard, KeySlot, PivCard
from broker.cardsim.card import CardStatus
from broker.client import tlv
from broker.client.apdu import ResponseApdu
from broker.client.cac import CacSession, PkiApplet, parse_simple_tlv_headers
from broker.client.errors import CardError, MalformedResponseError
from broker.client.piv import PivSession, Slot
from broker.pki import PkiError, RevocationCache, RevocationSettings, TrustStore, issue
from broker.pki.chain import verify_certificate
from broker.pki.identity import identity_of
from broker.pki.parsing import load_crl, parse_certificate
from broker.service.directories import DirectoryFileError, load_file
from broker.web import models
from broker.web.http import BadRequest, parse_model, read_json

Target = Callable[[bytes], bool]
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@cache
def pki() -> issue.DemoPki:
    return issue.make_demo_pki()


@cache
def ocsp_pki() -> tuple[issue.Issued, issue.Issued]:
    """A CA and a user whose certificate names an OCSP responder (never contacted)."""
    root = issue.make_root("Fuzz Root")
    user = issue.make_user_cert(root, "fuzz.user", upn="fuzz.user@corp.example",
                                ocsp_url="http://127.0.0.1:9/ocsp")
    return root, user


def _der(issued: issue.Issued) -> bytes:
    return issued.cert.public_bytes(serialization.Encoding.DER)


# --------------------------------------------------------------------------- card side

def ber_tlv(data: bytes) -> bool:
    try:
        tlv.decode(data)
    except MalformedResponseError:
        return False
    return True


def cac_tl_buffer(data: bytes) -> bool:
    try:
        parse_simple_tlv_headers(data)
    except MalformedResponseError:
        return False
    return True


class ScriptedCard:
    """A card connection whose answers are cut from the fuzz input: each answer is a 2-byte
    length and that many bytes; when the input runs out the card answers 6A82."""

    atr = bytes.fromhex("3b8880010000000000000000")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sent = 0

    def transmit(self, apdu: bytes) -> bytes:
        self.sent += 1
        if self.sent > 200:
            raise CardError("card_error", "fuzz card: too many commands")
        if len(self.data) < 2:
            return b"\x6a\x82"
        n = int.from_bytes(self.data[:2], "big") % 512
        answer, self.data = self.data[2:2 + n], self.data[2 + n:]
        return answer

    def disconnect(self) -> None:
        pass


def apdu_responses_piv(data: bytes) -> bool:
    try:
        ResponseApdu.parse(data)
        session = PivSession(ScriptedCard(data))
        session.read_chuid()
        session.read_certificate(Slot.AUTHENTICATION)
        session.pin_attempts_remaining()
        session.verify_pin("123456")
    except CardError:
        return False
    return True


def apdu_responses_cac(data: bytes) -> bool:
    try:
        session = CacSession(ScriptedCard(data))
        session.read_certificate(PkiApplet.IDENTITY)
        session.pin_attempts_remaining()
    except CardError:
        return False
    return True


@cache
def _cards() -> tuple[PivCard, CacCard]:
    p = pki()
    slot = KeySlot(p.user.key, p.user.cert)
    return PivCard(p.user.key, p.user.cert), CacCard(slot, slot, slot)


def _framed(data: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        out.append(data[i + 1:i + 1 + data[i]])
        i += 1 + data[i]
    return out


def card_commands(data: bytes) -> bool:
    """The virtual cards parse command APDUs arriving from pcscd: every input gets a status
    word; an applet exception (answered 6F00 and logged) counts as a crash. The input is a
    series of commands, each a length byte and that many bytes. Accepted: the PIV card answered
    every command with success (9000 or 61xx)."""
    accepted = True
    for card in _cards():
        card.reset()
        for command in _framed(data):
            try:
                answer = card._process(command)  # process_apdu would hide a crash
            except CardStatus:
                accepted = accepted and not isinstance(card, PivCard)
                continue
            assert len(answer) >= 2
            if isinstance(card, PivCard) and answer[-2] not in (0x90, 0x61):
                accepted = False
    return accepted


# --------------------------------------------------------------------------- PKI

def certificate(data: bytes) -> bool:
    p = pki()
    trust = TrustStore.from_pem([p.root.cert.public_bytes(serialization.Encoding.PEM)],
                                [p.intermediate.cert.public_bytes(serialization.Encoding.PEM)])
    try:
        cert = parse_certificate(data)
        identity_of(cert)
        verify_certificate(data, [], trust, at=NOW)
    except PkiError:
        return False
    return True


def crl(data: bytes) -> bool:
    try:
        load_crl(data)
    except PkiError:
        return False
    return True


def ocsp_response(data: bytes) -> bool:
    """A responder answering ``data``: hard fail must refuse with a PKI code, never crash."""
    root, user = ocsp_pki()
    trust = TrustStore.from_pem([root.cert.public_bytes(serialization.Encoding.PEM)])

    def fetch(url: str, body: bytes | None, ctype: str | None, timeout: float) -> bytes:
        return data

    accepted = True
    for mode in ("soft", "hard"):
        try:
            verify_certificate(_der(user), [], trust, at=NOW, fetch=fetch,
                               cache=RevocationCache(),
                               revocation=RevocationSettings(crl=False, ocsp=True,
                                                             fail_mode=mode))
        except PkiError as exc:
            assert mode == "hard" or exc.code == "certificate_revoked", exc
            accepted = False
    return accepted


def crl_from_distribution_point(data: bytes) -> bool:
    root = pki().root
    user = _dp_user()
    trust = TrustStore.from_pem([root.cert.public_bytes(serialization.Encoding.PEM)])

    def fetch(url: str, body: bytes | None, ctype: str | None, timeout: float) -> bytes:
        return data

    try:
        verify_certificate(_der(user), [], trust, at=NOW, fetch=fetch, cache=RevocationCache(),
                           revocation=RevocationSettings(crl=True, fail_mode="hard"))
    except PkiError:
        return False
    return True


@cache
def _dp_user() -> issue.Issued:
    return issue.make_user_cert(pki().root, "dp.user", crl_url="http://127.0.0.1:9/ca.crl")


# --------------------------------------------------------------------------- broker input

def registration_code(data: bytes) -> bool:
    try:
        registration.parse(data.decode("utf-8", "replace"))
    except registration.RegistrationCodeError:
        return False
    return True


class _Request:
    """What read_json needs of a Twisted request."""

    def __init__(self, body: bytes) -> None:
        self.content = BytesIO(body)
        self.too_large = False

    def getHeader(self, name: bytes) -> bytes | None:  # noqa: N802 (twisted API)
        return b"application/json" if name.lower() == b"content-type" else None


REQUEST_MODELS = [models.RegistrationRequest, models.ChallengeRequest, models.ChallengeResponse,
                  models.PasswordLogin, models.LogonRequest, models.HeartbeatRequest,
                  models.InSessionChallengeRequest, models.InSessionResponse]


def json_body(data: bytes) -> bool:
    """Accepted: the body is JSON that at least one request model takes."""
    try:
        parsed = read_json(_Request(data))  # type: ignore[arg-type]
    except BadRequest:
        return False
    accepted = False
    for model in REQUEST_MODELS:
        try:
            parse_model(model, parsed)
            accepted = True
        except BadRequest:
            pass
    return accepted


def directory_file(data: bytes) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "directories.toml"
        path.write_bytes(data)
        try:
            load_file(path, {"us-gov-west-1", "us-east-1"})
        except DirectoryFileError:
            return False
    return True


# --------------------------------------------------------------------------- seeds

def _ocsp_seed() -> bytes:
    root, user = ocsp_pki()
    return (ocsp.OCSPResponseBuilder()
            .add_response(cert=user.cert, issuer=root.cert, algorithm=hashes.SHA1(),
                          cert_status=ocsp.OCSPCertStatus.GOOD,
                          this_update=NOW - dt.timedelta(minutes=1),
                          next_update=NOW + dt.timedelta(hours=1),
                          revocation_time=None, revocation_reason=None)
            .responder_id(ocsp.OCSPResponderEncoding.HASH, root.cert)
            .sign(root.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))


class _Recorder:
    """A connection to a virtual card that keeps every answer in ScriptedCard's format."""

    def __init__(self, card: PivCard | CacCard) -> None:
        self.card = card
        self.atr = card.power_on()
        self.script = b""

    def transmit(self, apdu: bytes) -> bytes:
        answer = self.card.process_apdu(apdu)
        self.script += len(answer).to_bytes(2, "big") + answer
        return answer

    def disconnect(self) -> None:
        pass


def _recorded(kind: str) -> bytes:
    """The answers a real (virtual) card gives to the calls the target makes."""
    piv, cac = _cards()
    if kind == "piv":
        rec = _Recorder(piv)
        session = PivSession(rec)
        session.read_chuid()
        session.read_certificate(Slot.AUTHENTICATION)
        session.pin_attempts_remaining()
        session.verify_pin("123456")
    else:
        rec = _Recorder(cac)
        cac_session = CacSession(rec)
        cac_session.read_certificate(PkiApplet.IDENTITY)
        cac_session.pin_attempts_remaining()
    return rec.script


DIRECTORY_SEED = b"""
[[directory]]
id = "corp"
name = "Corp"
region = "us-gov-west-1"
password_login = false
smart_card = { pre_session = true, in_session = true, removal_action = "lock" }
revocation = { crl = true, ocsp = false, fail_mode = "soft" }
certmap = ["upn", "email"]
registration_codes = 1

[[directory.user]]
username = "alice"
upn = "alice@corp.example"

[[directory.workspace]]
id = "ws-alice"
user = "alice"
protocol = "WSP"
running_mode = "AUTO_STOP"
state = "STOPPED"
"""


def seeds() -> dict[str, bytes]:
    p = pki()
    crl_der = issue.make_crl(p.intermediate, [5]).public_bytes(serialization.Encoding.DER)
    # The distribution-point user is issued by the root: its CRL must come from the root too.
    root_crl_der = issue.make_crl(p.root, [5]).public_bytes(serialization.Encoding.DER)
    code = str(registration.generate("SLgovw"))
    body = {"registration_code": code,
            "client": {"platform": "windows", "arch": "x86_64", "version": "3.1.1"},
            "card_count": 1, "purpose": "pre_session"}
    return {
        "ber_tlv": tlv.encode(0x53, tlv.encode(0x70, b"\x30\x03\x02\x01\x01")),
        "cac_tl_buffer": bytes.fromhex("700571ff00017202"),  # 70:5, 71:256 (FF 0001), 72:2
        "apdu_responses_piv": _recorded("piv"),
        "apdu_responses_cac": _recorded("cac"),
        "card_commands": bytes.fromhex("0f" "00a4040009a0000003080000100000"  # SELECT PIV
                                       "0b" "00cb3fff055c035fc10200"),  # GET DATA CHUID
        "certificate": _der(p.user),
        "crl": crl_der,
        "ocsp_response": _ocsp_seed(),
        "crl_from_distribution_point": root_crl_der,
        "registration_code": code.encode(),
        "json_body": json.dumps(body).encode(),
        "directory_file": DIRECTORY_SEED,
    }


TARGETS: dict[str, Target] = {
    "ber_tlv": ber_tlv,
    "cac_tl_buffer": cac_tl_buffer,
    "apdu_responses_piv": apdu_responses_piv,
    "apdu_responses_cac": apdu_responses_cac,
    "card_commands": card_commands,
    "certificate": certificate,
    "crl": crl,
    "ocsp_response": ocsp_response,
    "crl_from_distribution_point": crl_from_distribution_point,
    "registration_code": registration_code,
    "json_body": json_body,
    "directory_file": directory_file,
}


def run(name: str, data: bytes) -> bool:
    """Run one target: whether it accepted ``data``. Each target catches its own layer's error,
    so anything escaping (another layer's BrokerError included) is a crash."""
    return TARGETS[name](data)
