"""Smart-card and password login: pre-session challenges, signed responses, auth tokens.

The challenge format and single use live in :mod:`broker.service.challenges`, certificate
verification in :mod:`broker.service.trust`, refusal auditing and failure counting in
:mod:`broker.service.attempts`. Each use case here is a short sequence of named transactions:
read what is needed, verify outside any transaction (revocation fetches may block), then commit
the outcome — a refused response changes nothing but the audit log and the failure counters.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker import policy
from broker.codes import Code
from broker.service import audit, limits
from broker.service.attempts import Attempt, address_throttle, audited, check_address
from broker.service.challenges import check_challenge, consume_challenge, create_challenge
from broker.service.context import BrokerContext
from broker.service.errors import ServiceError
from broker.service.passwords import verify_password
from broker.service.registrations import ClientSpec, directory_settings, resolve_code
from broker.service.tokens import new_token, token_hash
from broker.service.trust import (
    TrustSnapshot,
    Verified,
    find_user,
    verify_card_response,
)
from broker.service.wire import cert_fingerprint, decode_b64, der_certificate, rfc3339
from broker.store.models import AuthToken, Directory, User, WorkSpace


def issue_login_challenge(ctx: BrokerContext, code: str, client: ClientSpec, card_count: int,
                          address: str | None) -> dict[str, Any]:
    """POST /v1/auth/challenges: policy check, rate limits, a fresh pre-session challenge."""
    attempt = Attempt("challenge.issue", address)

    def issue(session: Session) -> dict[str, Any]:
        now = ctx.now()
        row, d = resolve_code(ctx, session, code, now)
        attempt.directory_id = d.id
        decision = policy.decide_smart_card(
            ctx.catalogue.get(d.region), directory_settings(d), policy.Purpose.PRE_SESSION,
            client=client.info(), card_count=card_count)
        if not decision.allowed:
            reasons = [r.value for r in decision.reasons]
            raise ServiceError(Code.SMART_CARD_NOT_ALLOWED,
                               "Smart-card login is not allowed here: " + ", ".join(reasons),
                               {"reasons": reasons})
        check_address(session, attempt, now)
        lim = ctx.settings.login
        if address:
            # Per client of a code, per client overall: one client cannot spend everyone's.
            limits.hit(session, f"chal:code:{row.id}:{address}",
                       lim.challenges_per_code_per_minute, 60, now)
            limits.hit(session, f"chal:addr:{address}", lim.challenges_per_address_per_minute,
                       60, now)
        limits.hit(session, f"chal:dir:{d.id}", lim.challenges_per_directory_per_minute, 60, now)
        body = create_challenge(ctx, session, d.id, "pre_session", now=now, address=address,
                                registration_code_id=row.id)
        audit.record(session, "challenge.issue", "success", directory_id=d.id,
                     client_address=address, challenge_id=body["challenge_id"],
                     purpose="pre_session")
        return body

    return audited(ctx, attempt, lambda: ctx.db.transaction(issue))


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


def _login_body(user: User, token: str, expires: datetime, method: str,
                workspaces: list[dict[str, Any]]) -> dict[str, Any]:
    return {"auth_token": token, "expires_at": rfc3339(expires), "method": method,
            "user": {"username": user.username, "upn": user.upn, "email": user.email,
                     "directory_id": user.directory_id},
            "workspaces": workspaces}


def respond_to_challenge(ctx: BrokerContext, challenge_id: str, certificate_b64: str,
                         chain_b64: list[str], signature_b64: str, algorithm: str,
                         address: str | None) -> dict[str, Any]:
    """POST /v1/auth/challenges/{id}/response: verify, map, consume, hand out a token."""
    attempt = Attempt("login.smart_card", address, challenge_id=challenge_id)

    def read_challenge(session: Session) -> tuple[bytes, TrustSnapshot]:
        now = ctx.now()
        # One read for both throttles that apply before any verification work.
        limits.check_locks(session, {f"fail:cert:{attempt.fingerprint}": Code.LOCKED_OUT,
                                     **address_throttle(attempt)}, now)
        ch = check_challenge(session, challenge_id, now)
        if ch.purpose != "pre_session":
            raise ServiceError(Code.CHALLENGE_UNKNOWN, "This is not a login challenge.")
        d = session.get(Directory, ch.directory_id)
        if d is None:
            raise ServiceError(Code.CHALLENGE_UNKNOWN, "There is no such challenge.")
        attempt.directory_id = d.id
        return ch.to_be_signed, ctx.trust.snapshot(session, d)

    def grant(session: Session, verified: Verified, snap: TrustSnapshot) -> dict[str, Any]:
        now = ctx.now()
        consume_challenge(session, challenge_id, now)
        user = find_user(session, snap.directory_id, verified.identity, snap.certmap)
        wss = workspaces_of(session, user.id)
        if not any(w["protocol"] == "WSP" for w in wss):
            raise ServiceError(Code.SMART_CARD_REQUIRES_WSP,
                               "Smart cards work only with WorkSpaces streamed over WSP, and "
                               "this user has none.")
        token, expires = _issue_auth_token(ctx, session, user, "smart_card", now,
                                           verified.cert_der)
        limits.clear(session, f"fail:cert:{verified.fingerprint}")
        audit.record(session, "login.smart_card", "success", directory_id=user.directory_id,
                     username=user.username, client_address=address,
                     cert_fingerprint=verified.fingerprint, challenge_id=challenge_id,
                     revocation_soft_fail=verified.soft_fail or None,
                     verification=verified.evidence or None)
        return _login_body(user, token, expires, "smart_card", wss)

    def run() -> dict[str, Any]:
        cert_der = der_certificate(certificate_b64)
        attempt.fingerprint = cert_fingerprint(cert_der)
        chain = [der_certificate(c, "chain certificate") for c in chain_b64]
        signature = decode_b64(signature_b64, "signature_invalid", "signature")
        tbs, snap = ctx.db.read(read_challenge)
        verified = verify_card_response(ctx, snap, tbs, cert_der, chain, signature, algorithm,
                                        on_key_proven=attempt.prove_key)
        return ctx.db.transaction(lambda s: grant(s, verified, snap))

    return audited(ctx, attempt, run)


def password_login(ctx: BrokerContext, code: str, username: str, password: str,
                   address: str | None) -> dict[str, Any]:
    """POST /v1/auth/password, where the directory allows it."""
    attempt = Attempt("login.password", address, username=username[:200])

    def check(session: Session) -> dict[str, Any]:
        now = ctx.now()
        _row, d = resolve_code(ctx, session, code, now)
        attempt.directory_id = d.id
        if not d.password_login:
            raise ServiceError(Code.PASSWORD_LOGIN_DISABLED,
                               "This directory does not allow password login.")
        check_address(session, attempt, now)
        attempt.user_key = f"fail:user:{d.id}:{username.lower()[:200]}"
        limits.check_lockout(session, attempt.user_key, now)
        user = session.scalar(select(User).where(User.directory_id == d.id,
                                                 User.username == username))
        ok = verify_password(password, user.password_hash if user else None)
        if not ok or user is None or user.disabled:
            raise ServiceError(Code.INVALID_CREDENTIALS, "The user name or password is wrong.")
        token, expires = _issue_auth_token(ctx, session, user, "password", now)
        limits.clear(session, attempt.user_key)
        audit.record(session, "login.password", "success", directory_id=d.id,
                     username=user.username, client_address=address)
        return _login_body(user, token, expires, "password", workspaces_of(session, user.id))

    return audited(ctx, attempt, lambda: ctx.db.transaction(check))
