"""Smart-card and password login: PKI challenges, signed responses, auth tokens.

What the card signs (``to_be_signed``) is canonical bytes, version 1::

    b"smartcard-broker/challenge/v1\\n" + JSON

where JSON is the UTF-8 encoding of an object with exactly these keys, sorted, no whitespace
(``json.dumps(obj, sort_keys=True, separators=(",", ":"))``):

    broker      the broker_id of this deployment          "smartcard-broker"
    challenge   the challenge id                          "q3V…" (url-safe base64)
    directory   the directory id                          "corp"
    expires     expiry, UTC, RFC 3339 with "Z"            "2026-11-25T05:30:00Z"
    nonce       32 random bytes, url-safe base64, no pad  "Zm9v…"
    purpose     pre_session | logon | in_session:<kind>   "pre_session"

Binding all of them means a signature is good for exactly one challenge of one broker, one
directory and one purpose, until one instant. The challenge row stores these bytes; the client
signs them as given and never has to rebuild them.

A challenge is single-use across every broker process: the response is accepted only by the one
``UPDATE challenges SET used_at = now WHERE id = … AND used_at IS NULL AND expires_at > now``
that changes a row. A refused response changes nothing but the audit log and the failure
counter of the certificate that was presented.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from broker import policy
from broker.errors import BrokerError
from broker.service import audit, limits
from broker.service.context import BrokerContext
from broker.service.errors import ServiceError
from broker.service.passwords import verify_password
from broker.service.registrations import ClientSpec, directory_settings, resolve_code
from broker.service.tokens import new_token, token_hash
from broker.store.models import (
    AuthToken,
    Challenge,
    Crl,
    Directory,
    TrustCertificate,
    User,
    WorkSpace,
)

TBS_PREFIX = b"smartcard-broker/challenge/v1\n"
MAX_CERT_BYTES = 16 * 1024


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_be_signed(broker_id: str, challenge_id: str, directory_id: str, expires: datetime,
                 nonce: bytes, purpose: str) -> bytes:
    body = {"broker": broker_id, "challenge": challenge_id, "directory": directory_id,
            "expires": rfc3339(expires), "nonce": b64u(nonce), "purpose": purpose}
    return TBS_PREFIX + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def decode_b64(value: str, code: str, what: str) -> bytes:
    """Standard or url-safe base64, padded or not; ``code`` error when it is not."""
    text = value.strip()
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ServiceError(code, f"The {what} is not valid base64.") from None


def cert_fingerprint(der: bytes) -> str:
    h = hashes.Hash(hashes.SHA256())
    h.update(der)
    return h.finalize().hex()


# --------------------------------------------------------------------------- trust snapshot

@dataclass(frozen=True)
class TrustSnapshot:
    """What verifying a certificate for one directory needs, read in one transaction."""

    directory_id: str
    anchors: tuple[bytes, ...]
    intermediates: tuple[bytes, ...]
    crls: tuple[bytes, ...]
    crl_on: bool
    ocsp_on: bool
    fail_mode: str
    required_eku: str
    certmap: tuple[str, ...]
    users: tuple[Any, ...] = field(default=())

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.directory_id, self.anchors, self.intermediates, self.crls)


def load_trust(session: Session, d: Directory, with_users: bool = True) -> TrustSnapshot:
    from broker.pki.identity import UserRecord

    certs = list(session.scalars(select(TrustCertificate).where(
        TrustCertificate.directory_id == d.id).order_by(TrustCertificate.id)))
    crls = list(session.scalars(select(Crl).where(Crl.directory_id == d.id).order_by(Crl.id)))
    users: tuple[Any, ...] = ()
    if with_users:
        users = tuple(UserRecord(username=u.username, upn=u.upn, email=u.email,
                                 subject=u.subject, fingerprint=u.cert_fingerprint)
                      for u in session.scalars(select(User).where(
                          User.directory_id == d.id, User.disabled.is_(False))))
    return TrustSnapshot(
        directory_id=d.id,
        anchors=tuple(c.der for c in certs if c.kind == "anchor"),
        intermediates=tuple(c.der for c in certs if c.kind == "intermediate"),
        crls=tuple(c.der for c in crls), crl_on=d.revocation_crl, ocsp_on=d.revocation_ocsp,
        fail_mode=d.revocation_fail_mode, required_eku=d.required_eku,
        certmap=tuple(d.certmap or ["upn", "email"]), users=users)


def accepted_issuers(session: Session, directory_id: str) -> list[str]:
    return [c.subject for c in session.scalars(select(TrustCertificate).where(
        TrustCertificate.directory_id == directory_id).order_by(TrustCertificate.id))]


class TrustStoreCache:
    """Parsed trust stores per directory, rebuilt only when the trust material changes."""

    def __init__(self) -> None:
        self._stores: dict[str, tuple[tuple[Any, ...], Any]] = {}

    def get(self, snap: TrustSnapshot) -> Any:
        from broker.pki import TrustStore

        hit = self._stores.get(snap.directory_id)
        if hit is not None and hit[0] == snap.key:
            return hit[1]
        pem = [x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM)
               for d in snap.anchors]
        inter = [x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM)
                 for d in snap.intermediates]
        crls = [x509.load_der_x509_crl(d).public_bytes(serialization.Encoding.PEM)
                for d in snap.crls]
        store = TrustStore.from_pem(pem, intermediates=inter, crls=crls)
        self._stores[snap.directory_id] = (snap.key, store)
        return store


@dataclass
class Verified:
    fingerprint: str
    cert_der: bytes
    username: str
    soft_fail: list[str]


def verify_card_response(ctx: BrokerContext, snap: TrustSnapshot, tbs: bytes, cert_der: bytes,
                         chain_der: list[bytes], signature: bytes, algorithm: str,
                         *, map_user: bool = True) -> Verified:
    """Signature, chain, revocation and certmap; raises BrokerError with the stable code.

    Runs outside any transaction (OCSP and CRL fetches may block; this is a worker thread).
    """
    from broker.pki import RevocationSettings, parse_certificate, verify_certificate
    from broker.pki.identity import map_certificate
    from broker.pki.signatures import verify_signature

    if len(cert_der) > MAX_CERT_BYTES:
        raise ServiceError("certificate_malformed", "The certificate is too large.")
    leaf = parse_certificate(cert_der)
    verify_signature(leaf, tbs, signature, algorithm)
    result = verify_certificate(
        cert_der, chain_der, ctx_trust_cache(ctx).get(snap), at=ctx.now(),
        purpose=snap.required_eku,
        revocation=RevocationSettings(crl=snap.crl_on, ocsp=snap.ocsp_on,
                                      fail_mode=snap.fail_mode),
        cache=ctx_revocation_cache(ctx))
    username = ""
    if map_user:
        username = map_certificate(result.identity, list(snap.certmap), snap.users).username
    return Verified(cert_fingerprint(cert_der), cert_der, username,
                    list(result.soft_fail_reasons))


def ctx_trust_cache(ctx: BrokerContext) -> TrustStoreCache:
    cache = getattr(ctx, "_trust_cache", None)
    if cache is None:
        cache = TrustStoreCache()
        ctx._trust_cache = cache  # type: ignore[attr-defined]
    return cache


def ctx_revocation_cache(ctx: BrokerContext) -> Any:
    cache = getattr(ctx, "_revocation_cache", None)
    if cache is None:
        try:
            from broker.pki.revocation import RevocationCache
        except ImportError:
            return None
        cache = RevocationCache()
        ctx._revocation_cache = cache  # type: ignore[attr-defined]
    return cache


# --------------------------------------------------------------------------- challenges

def create_challenge(ctx: BrokerContext, session: Session, directory_id: str, purpose: str, *,
                     now: datetime, address: str | None = None,
                     registration_code_id: int | None = None,
                     cert_fingerprint: str | None = None, workspace_id: str | None = None,
                     session_id: str | None = None,
                     auth_token_id: int | None = None) -> dict[str, Any]:
    """Store a new single-use challenge and return its public description."""
    from broker.pki.signatures import SUPPORTED_SIGNATURE_ALGORITHMS

    cid = secrets.token_urlsafe(18)
    expires = (now + timedelta(seconds=ctx.settings.login.challenge_ttl_s)).replace(
        microsecond=0)
    tbs = to_be_signed(ctx.settings.server.broker_id, cid, directory_id, expires,
                       secrets.token_bytes(32), purpose)
    session.add(Challenge(id=cid, directory_id=directory_id, purpose=purpose.split(":")[0],
                          detail=purpose.split(":")[1] if ":" in purpose else None,
                          to_be_signed=tbs, expires_at=expires, client_address=address,
                          registration_code_id=registration_code_id,
                          cert_fingerprint=cert_fingerprint, workspace_id=workspace_id,
                          session_id=session_id, auth_token_id=auth_token_id, created_at=now))
    return {"challenge_id": cid, "to_be_signed": base64.b64encode(tbs).decode(),
            "expires_at": rfc3339(expires), "purpose": purpose,
            "accepted_issuers": accepted_issuers(session, directory_id),
            "signature_algorithms": list(SUPPORTED_SIGNATURE_ALGORITHMS)}


def check_challenge(session: Session, challenge_id: str, now: datetime) -> Challenge:
    """The challenge row if it can still be answered (else challenge_unknown/expired/used)."""
    ch = session.get(Challenge, challenge_id) if len(challenge_id) <= 64 else None
    if ch is None:
        raise ServiceError("challenge_unknown", "There is no such challenge.")
    if ch.used_at is not None:
        raise ServiceError("challenge_used", "This challenge has already been answered.")
    if ch.expires_at <= now:
        raise ServiceError("challenge_expired", "This challenge has expired; ask for a new one.")
    return ch


def consume_challenge(session: Session, challenge_id: str, now: datetime) -> None:
    """Mark the challenge used; exactly one caller across all processes succeeds."""
    result = session.execute(
        update(Challenge)
        .where(Challenge.id == challenge_id, Challenge.used_at.is_(None),
               Challenge.expires_at > now)
        .values(used_at=now)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        ch = session.get(Challenge, challenge_id)
        if ch is not None and ch.used_at is None:
            raise ServiceError("challenge_expired", "This challenge has expired.")
        raise ServiceError("challenge_used", "This challenge has already been answered.")


def issue_login_challenge(ctx: BrokerContext, code: str, client: ClientSpec, card_count: int,
                          address: str | None) -> dict[str, Any]:
    """POST /v1/auth/challenges: policy check, rate limits, a fresh pre-session challenge."""
    refusal: list[Any] = []

    def work(session: Session) -> dict[str, Any]:
        now = ctx.now()
        row, d = resolve_code(ctx, session, code, now)
        decision = policy.decide_smart_card(
            ctx.catalogue.get(d.region), directory_settings(d), policy.Purpose.PRE_SESSION,
            client=client.info(), card_count=card_count)
        if not decision.allowed:
            reasons = [r.value for r in decision.reasons]
            refusal.append((d.id, reasons))
            raise ServiceError("smart_card_not_allowed",
                               "Smart-card login is not allowed here: " + ", ".join(reasons),
                               {"reasons": reasons})
        lim = ctx.settings.login
        limits.hit(session, f"chal:code:{row.id}", lim.challenges_per_code_per_minute, 60, now)
        if address:
            limits.hit(session, f"chal:addr:{address}", lim.challenges_per_address_per_minute,
                       60, now)
        body = create_challenge(ctx, session, d.id, "pre_session", now=now, address=address,
                                registration_code_id=row.id)
        audit.record(session, "challenge.issue", "success", directory_id=d.id,
                     client_address=address, challenge_id=body["challenge_id"],
                     purpose="pre_session")
        return body

    try:
        return ctx.db.transaction(work)
    except BrokerError as exc:
        directory_id, reasons = refusal[0] if refusal else (None, None)
        reason = exc.code
        ctx.db.transaction(lambda s: audit.record(
            s, "challenge.issue", "refused", reason=reason, directory_id=directory_id,
            client_address=address, **({"reasons": reasons} if reasons else {})))
        raise


def workspaces_of(session: Session, user_id: int) -> list[dict[str, Any]]:
    return [{"id": w.id, "name": w.name, "protocol": w.protocol,
             "running_mode": w.running_mode, "state": w.state}
            for w in session.scalars(select(WorkSpace).where(WorkSpace.user_id == user_id)
                                     .order_by(WorkSpace.id))]


def _issue_auth_token(ctx: BrokerContext, session: Session, user: User, method: str, now: datetime,
                      cert_der: bytes | None = None) -> tuple[str, datetime]:
    token = new_token("sbt")
    expires = now + timedelta(seconds=ctx.settings.login.auth_token_ttl_s)
    session.add(AuthToken(token_hash=token_hash(token), user_id=user.id,
                          directory_id=user.directory_id, method=method,
                          cert_fingerprint=cert_fingerprint(cert_der) if cert_der else None,
                          cert_der=cert_der, expires_at=expires, created_at=now))
    return token, expires


def _login_body(session: Session, user: User, token: str, expires: datetime,
                method: str) -> dict[str, Any]:
    return {"auth_token": token, "expires_at": rfc3339(expires), "method": method,
            "user": {"username": user.username, "upn": user.upn, "email": user.email,
                     "directory_id": user.directory_id},
            "workspaces": workspaces_of(session, user.id)}


def respond_to_challenge(ctx: BrokerContext, challenge_id: str, certificate_b64: str,
                         chain_b64: list[str], signature_b64: str, algorithm: str,
                         address: str | None) -> dict[str, Any]:
    """POST /v1/auth/challenges/{id}/response: verify, map, consume, hand out a token."""
    state: dict[str, Any] = {}

    def load(session: Session) -> tuple[bytes, TrustSnapshot]:
        now = ctx.now()
        ch = check_challenge(session, challenge_id, now)
        if ch.purpose != "pre_session":
            raise ServiceError("challenge_unknown", "This is not a login challenge.")
        d = session.get(Directory, ch.directory_id)
        assert d is not None
        state["directory_id"] = d.id
        if "fingerprint" in state:
            limits.check_lockout(session, f"fail:cert:{state['fingerprint']}", now)
        return ch.to_be_signed, load_trust(session, d)

    def finish(session: Session, verified: Verified) -> dict[str, Any]:
        now = ctx.now()
        consume_challenge(session, challenge_id, now)
        user = session.scalar(select(User).where(User.directory_id == state["directory_id"],
                                                 User.username == verified.username))
        if user is None or user.disabled:
            raise ServiceError("user_not_found", "No enabled user matches this certificate.")
        wss = workspaces_of(session, user.id)
        if not any(w["protocol"] == "WSP" for w in wss):
            raise ServiceError("smart_card_requires_wsp",
                               "Smart cards work only with WorkSpaces streamed over WSP, and "
                               "this user has none.")
        token, expires = _issue_auth_token(ctx, session, user, "smart_card", now,
                                           verified.cert_der)
        limits.clear(session, f"fail:cert:{verified.fingerprint}")
        audit.record(session, "login.smart_card", "success", directory_id=user.directory_id,
                     username=user.username, client_address=address,
                     cert_fingerprint=verified.fingerprint, challenge_id=challenge_id,
                     revocation_soft_fail=verified.soft_fail or None)
        return _login_body(session, user, token, expires, "smart_card")

    try:
        cert_der = decode_b64(certificate_b64, "certificate_malformed", "certificate")
        state["fingerprint"] = cert_fingerprint(cert_der)
        chain = [decode_b64(c, "certificate_malformed", "chain certificate") for c in chain_b64]
        signature = decode_b64(signature_b64, "signature_invalid", "signature")
        tbs, snap = ctx.db.transaction(load)
        verified = verify_card_response(ctx, snap, tbs, cert_der, chain, signature, algorithm)
        return ctx.db.transaction(lambda s: finish(s, verified))
    except BrokerError as exc:
        _record_refusal(ctx, "login.smart_card", exc, state, address, challenge_id)
        raise


def _record_refusal(ctx: BrokerContext, kind: str, exc: BrokerError, state: dict[str, Any],
                    address: str | None, challenge_id: str) -> None:
    """Audit a refusal and count it against the certificate (in a transaction of its own)."""
    lim = ctx.settings.login
    # Count what looks like guessing or impersonation, not replays or expired challenges.
    counted = (exc.code in ("signature_invalid", "user_not_found", "user_ambiguous")
               or exc.code.startswith("certificate_"))
    fp = state.get("fingerprint")
    reason = exc.code

    def work(session: Session) -> None:
        audit.record(session, kind, "refused", reason=reason,
                     directory_id=state.get("directory_id"), client_address=address,
                     cert_fingerprint=fp, challenge_id=challenge_id[:64])
        if fp and counted:
            limits.record_failure(session, f"fail:cert:{fp}", lim.max_failures, lim.lockout_s,
                                  ctx.now())

    ctx.db.transaction(work)


def password_login(ctx: BrokerContext, code: str, username: str, password: str,
                   address: str | None) -> dict[str, Any]:
    """POST /v1/auth/password, where the directory allows it."""
    lim = ctx.settings.login
    state: dict[str, Any] = {}

    def work(session: Session) -> dict[str, Any]:
        now = ctx.now()
        _row, d = resolve_code(ctx, session, code, now)
        state["directory_id"] = d.id
        if not d.password_login:
            raise ServiceError("password_login_disabled",
                               "This directory does not allow password login.")
        limits.check_lockout(session, f"fail:user:{d.id}:{username.lower()}", now)
        user = session.scalar(select(User).where(User.directory_id == d.id,
                                                 User.username == username))
        ok = verify_password(password, user.password_hash if user else None)
        if not ok or user is None or user.disabled:
            raise ServiceError("invalid_credentials", "The user name or password is wrong.")
        token, expires = _issue_auth_token(ctx, session, user, "password", now)
        limits.clear(session, f"fail:user:{d.id}:{username.lower()}")
        audit.record(session, "login.password", "success", directory_id=d.id,
                     username=user.username, client_address=address)
        return _login_body(session, user, token, expires, "password")

    try:
        return ctx.db.transaction(work)
    except BrokerError as exc:
        reason = exc.code

        def refuse(session: Session) -> None:
            audit.record(session, "login.password", "refused", reason=reason,
                         directory_id=state.get("directory_id"),
                         username=username[:200], client_address=address)
            if reason == "invalid_credentials":
                limits.record_failure(session,
                                      f"fail:user:{state['directory_id']}:{username.lower()}",
                                      lim.max_failures, lim.lockout_s, ctx.now())

        ctx.db.transaction(refuse)
        raise
