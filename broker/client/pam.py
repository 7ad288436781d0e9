"""In-session authentication for PAM (``broker-client pam-auth``): the broker decides, the card
proves, the assertion is checked here before PAM hears "yes".

One attempt, in order: read the session file; check that ``PAM_USER`` is the session's user;
ask the broker for an in-session challenge (Bearer: the session's auth token) — the broker
applies its rules (WSP only, region, directory toggle, session alive) and audits the attempt
with its purpose; find the one card and the certificate to use; VERIFY the PIN; sign; send the
response; fetch the broker's JWKS and verify the returned JWS assertion (signature, issuer,
audience ``in-session:<purpose>``, subject = PAM_USER, purpose, session, expiry).

Every refusal is a :class:`Refusal` with a stable ``code`` and a one-line message fit for
syslog: it never contains the PIN, the auth token, the challenge or its nonce.

Trust: pam-auth runs as root (``pam_exec.so seteuid``) while the session file belongs to the
user, so the broker whose keys decide is taken from the PAM line (``--broker`` with
``--cafile`` or ``--pin-sha256``, written by ``pam-setup``), not from the file; a file that
names another broker is refused. Only a root-owned file, or pam-auth run by the user for
themselves, may name the broker alone.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.client import session_file
from broker.client.errors import (
    CardError,
    CardRemovedError,
    InvalidPinError,
    MultipleCardsError,
    NoCardError,
    NoReaderError,
    PinBlockedError,
    PinFormatError,
)
from broker.client.flow import (
    ApiError,
    BrokerApi,
    BrokerEndpoint,
    CardAccess,
    FlowError,
    b64,
    sign_challenge,
)
from broker.errors import BrokerError

JWS_ALGORITHMS = ["ES256"]
CLOCK_SKEW_S = 60
MAX_AUTHTOK = 256


class Refusal(BrokerError):
    """pam-auth said no; ``code`` is stable, ``message`` one line without secrets."""


def refuse(code: str, message: str) -> Refusal:
    return Refusal(code, message)


@dataclass(frozen=True)
class PamRequest:
    session_file: Path
    purpose: str = "sudo"
    broker: str | None = None  # from the PAM line: the broker whose keys decide
    cafile: str | None = None
    pin_sha256: str | None = None
    issuer: str | None = None
    timeout: float = 5.0


@dataclass(frozen=True)
class Granted:
    user: str
    purpose: str
    session_id: str
    claims: dict[str, Any]


def read_authtok(raw: bytes) -> str:
    """The PIN from what pam_exec ``expose_authtok`` writes (the token, NUL-terminated; a
    trailing newline from a terminal or a test is dropped too)."""
    text = raw[:MAX_AUTHTOK].split(b"\0", 1)[0].decode("utf-8", "replace")
    return text.splitlines()[0].strip() if text.strip() else ""


def _same_broker(a: str, b: str) -> bool:
    def norm(x: str) -> str:
        return x.removeprefix("https://").rstrip("/").lower()
    return norm(a) == norm(b)


def trusted_endpoint(req: PamRequest, sf: session_file.SessionFile) -> BrokerEndpoint:
    """The broker pam-auth believes (see the module docstring); Refusal broker_untrusted."""
    if req.broker:
        if sf.broker and not _same_broker(sf.broker, req.broker):
            raise refuse("broker_untrusted", "the session file names another broker than the "
                                             "PAM configuration")
        return BrokerEndpoint.parse(req.broker, cafile=req.cafile, pin_sha256=req.pin_sha256,
                                    timeout=req.timeout)
    if os.geteuid() != 0 or sf.owner_uid == 0:
        return BrokerEndpoint.parse(sf.broker, cafile=sf.data.get("ca_file"),
                                    pin_sha256=sf.data.get("pin_sha256"), timeout=req.timeout)
    raise refuse("broker_untrusted", "the PAM line pins no broker (run pam-setup with --broker "
                                     "and --cafile or --pin-sha256)")


def _allowed_owners(pam_user: str) -> set[int] | None:
    """Running as root: the file must belong to root or to PAM_USER's local account."""
    if os.geteuid() != 0:
        return None
    owners = {0}
    try:
        import pwd

        owners.add(pwd.getpwnam(pam_user).pw_uid)
    except KeyError:
        pass  # a directory user without a local account: only root may own the file
    return owners


def _api_refusal(exc: ApiError, stage: str) -> Refusal:
    code = exc.code
    if code in ("session_ended", "session_unknown"):
        return refuse("session_ended", "the session has ended")
    if code.startswith("auth_"):
        return refuse("session_login_expired", "the session's login is no longer valid "
                                               f"({code}); log in again")
    if code == "in_session_not_allowed":
        reasons = ", ".join(exc.details.get("reasons", [])) or "no reason given"
        return refuse("in_session_not_allowed", "in-session smart-card use is not allowed for "
                                                f"this session ({reasons})")
    if code == "certificate_mismatch":
        return refuse("certificate_not_sessions", "the card's certificate is not the session "
                                                  "user's")
    return refuse(code if code.startswith("certificate_") else "broker_refused",
                  f"the broker refused the {stage}: {code}")


def _card_refusal(exc: CardError) -> Refusal:
    if isinstance(exc, InvalidPinError):
        return refuse("pin_invalid", f"wrong PIN, {exc.attempts_remaining} "
                                     f"tr{'y' if exc.attempts_remaining == 1 else 'ies'} left "
                                     "before the card blocks")
    if isinstance(exc, PinBlockedError):
        return refuse("pin_blocked", "the card's PIN is blocked (unblock it with the PUK)")
    if isinstance(exc, PinFormatError):
        return refuse("pin_invalid", "the PIN is not in the card's format (nothing was sent)")
    if isinstance(exc, CardRemovedError):
        return refuse("card_removed", "the smart card was removed")
    if isinstance(exc, MultipleCardsError):
        return refuse("multiple_cards", "more than one smart card is inserted")
    if isinstance(exc, NoCardError | NoReaderError):
        return refuse("no_card", f"no smart card: {exc.message}")
    return refuse("card_error", f"card error: {exc.message}")


def verify_assertion(token: str, jwks: dict[str, Any], *, issuer: str, user: str,
                     purpose: str, session_id: str, now: float | None = None) -> dict[str, Any]:
    """The assertion's claims once its ES256 signature verifies with ``jwks`` and issuer,
    audience, subject, purpose, session and expiry are the expected ones; Refusal otherwise."""
    from joserfc import jwt
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    try:
        decoded = jwt.decode(token, KeySet.import_key_set(jwks),  # type: ignore[arg-type]
                             algorithms=JWS_ALGORITHMS)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise refuse("assertion_invalid", "the broker's assertion does not verify with its "
                                          f"JWKS ({type(exc).__name__})") from None
    claims = dict(decoded.claims)
    t = time.time() if now is None else now
    if not issuer:  # any broker's key would do: never accept an assertion unpinned
        raise refuse("assertion_invalid", "no issuer to require of the assertion")
    expected = {"aud": f"in-session:{purpose}", "sub": user, "purpose": purpose,
                "sid": session_id, "iss": issuer}
    for claim, want in expected.items():
        if claims.get(claim) != want:
            raise refuse("assertion_invalid", f"the assertion's {claim} is not the expected "
                                              "one")
    if not claims.get("iss"):
        raise refuse("assertion_invalid", "the assertion names no issuer")
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or exp <= t:
        raise refuse("assertion_invalid", "the assertion has expired")
    if isinstance(iat, int | float) and iat > t + CLOCK_SKEW_S:
        raise refuse("assertion_invalid", "the assertion is issued in the future")
    return claims


def _pick_certificate(card: Any, sf: session_file.SessionFile,
                      challenge: dict[str, Any]) -> Any:
    from cryptography.hazmat.primitives import serialization

    certs = card.certificates()
    wanted = sf.data.get("certificate_sha256")
    if wanted:
        for c in certs:
            der = c.certificate.public_bytes(serialization.Encoding.DER)
            if hashlib.sha256(der).hexdigest() == wanted:
                return c
        raise refuse("certificate_not_sessions", "the card's certificate is not the one this "
                                                 "session logged in with")
    options = card.filter_by_issuers(certs, challenge.get("accepted_issuers") or [])
    if not options:
        raise refuse("certificate_not_sessions", "the card holds no certificate this "
                                                 "directory accepts")
    preferred = [c for c in options if c.slot_id in ("9a", "cac0")]
    return (preferred or options)[0]


def authenticate(req: PamRequest, pam_user: str, pin: str, cards: CardAccess) -> Granted:
    """One in-session authentication; Granted, or Refusal with the reason."""
    from cryptography.hazmat.primitives import serialization

    if not pam_user:
        raise refuse("pam_user_missing", "PAM_USER is not set (run from pam_exec)")
    try:
        sf = session_file.load(req.session_file, _allowed_owners(pam_user))
    except session_file.SessionFileError as exc:
        raise refuse("session_file_invalid", exc.message) from None
    if sf.state != "active":
        raise refuse("session_ended", "the session has ended "
                                      f"({sf.data.get('reason') or 'no reason recorded'})")
    if sf.user != pam_user:
        raise refuse("user_mismatch", "PAM_USER is not the session's user")
    issuer = req.issuer or sf.data.get("issuer")
    if not isinstance(issuer, str) or not issuer:
        raise refuse("session_file_invalid", "the session file names no issuer (the broker "
                                             "id); log in again with --session-file")
    if not pin:
        raise refuse("pin_missing", "no PIN on standard input (use pam_exec expose_authtok)")
    api = BrokerApi(trusted_endpoint(req, sf))
    api.token = sf.auth_token
    base = f"/v1/sessions/{sf.session_id}/in-session/challenges"
    try:
        _, challenge = api.call("POST", base, {"purpose": req.purpose})
    except ApiError as exc:
        raise _api_refusal(exc, "challenge") from None
    except FlowError as exc:
        raise refuse("broker_unreachable", exc.message) from None
    card = None
    try:
        count = cards.count()
        if count == 0:
            raise refuse("no_card", "no smart card in the reader")
        if count > 1:
            raise refuse("multiple_cards", "more than one smart card is inserted")
        card = cards.open()
        chosen = _pick_certificate(card, sf, challenge)
        card.verify_pin(pin)
        signature, algorithm = sign_challenge(card, chosen.slot_id, chosen.certificate,
                                              challenge)
        cert_der = chosen.certificate.public_bytes(serialization.Encoding.DER)
    except CardError as exc:
        raise _card_refusal(exc) from None
    except FlowError as exc:
        raise refuse("card_error", exc.message) from None
    finally:
        if card is not None:
            card.connection.disconnect()
    try:
        _, answer = api.call("POST", f"{base}/{challenge['challenge_id']}/response",
                             # chain is optional (the broker holds the intermediates)
                             {"certificate": b64(cert_der), "signature": signature,
                              "algorithm": algorithm})
        _, jwks = api.call("GET", "/v1/jwks.json")
    except ApiError as exc:
        raise _api_refusal(exc, "signature") from None
    except FlowError as exc:
        raise refuse("broker_unreachable", exc.message) from None
    if not isinstance(answer, dict) or not isinstance(answer.get("assertion"), str):
        raise refuse("assertion_invalid", "the broker sent no assertion")
    claims = verify_assertion(answer["assertion"], jwks, issuer=issuer, user=pam_user,
                              purpose=req.purpose, session_id=sf.session_id)
    return Granted(pam_user, req.purpose, sf.session_id, claims)


def short_id(session_id: str) -> str:
    """Enough of a session id to find it in the audit log."""
    return session_id[:8] + "…" if len(session_id) > 8 else session_id


def ticket_issuer(ticket: str, jwks: dict[str, Any]) -> str | None:
    """The issuer of a session ticket that verifies with ``jwks`` (None when it does not)."""
    from joserfc import jwt
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    try:
        decoded = jwt.decode(ticket, KeySet.import_key_set(jwks),  # type: ignore[arg-type]
                             algorithms=JWS_ALGORITHMS)
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    iss = decoded.claims.get("iss")
    return str(iss) if iss else None

