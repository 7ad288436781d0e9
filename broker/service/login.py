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

from sqlalchemy import Connection

from broker import kinds, policy
from broker.codes import Code
from broker.service import audit, limits
from broker.service.attempts import (
    KNOWN_ADDRESS_S,
    Attempt,
    address_key,
    address_throttle,
    audited,
    bounded,
    prefix,
)
from broker.service.challenges import MAX_ID, challenge_row, check_row, refuse_unspent
from broker.service.context import BrokerContext
from broker.service.errors import ServiceError
from broker.service.ldapdir import LdapRefusal, LdapSettings, LdapUser, settings_of
from broker.service.passwords import verify_password
from broker.service.registrations import ClientSpec, CodeRow, code_settings, lookup_code
from broker.service.tokens import new_token, token_hash
from broker.service.trust import (
    MappedUser,
    TrustSnapshot,
    Verified,
    find_ldap_user,
    listings,
    map_ldap_user,
    map_user,
    verify_card_response,
)
from broker.service.wire import cert_fingerprint, decode_b64, der_certificate, rfc3339
from broker.store.logins import record_challenge, spend_and_grant
from broker.store.statements import (
    CHALLENGE_FOR_RESPONSE,
    DIRECTORY_LDAP,
    INSERT_AUTH_TOKEN,
    USER_BY_NAME_WITH_WORKSPACES,
)


def issue_login_challenge(ctx: BrokerContext, code: str, client: ClientSpec, card_count: int,
                          address: str | None) -> dict[str, Any]:
    """POST /v1/auth/challenges: policy check, rate limits, a fresh pre-session challenge.

    On the Core hot path, a read (the code with its directory and the address's lock; the
    accepted issuers from the trust cache) and a write transaction of one statement on
    PostgreSQL (:func:`broker.store.logins.record_challenge`: the rate counters, the challenge,
    its audit event), rolled back when a counter is past its limit."""
    attempt = Attempt("challenge.issue", address)
    lock_key = address_key(address)

    def check(conn: Connection) -> tuple[CodeRow, list[str], datetime]:
        now = ctx.now()
        d = lookup_code(ctx, conn, code, now, address_key=lock_key)
        attempt.directory_id = d.directory_id
        decision = policy.decide_smart_card(
            ctx.catalogue.get(d.region), code_settings(d), policy.Purpose.PRE_SESSION,
            client=client.info(), card_count=card_count)
        if not decision.allowed:
            reasons = [r.value for r in decision.reasons]
            raise ServiceError(Code.SMART_CARD_NOT_ALLOWED,
                               "Smart-card login is not allowed here: " + ", ".join(reasons),
                               {"reasons": reasons})
        if lock_key:
            limits.locked({lock_key: Code.RATE_LIMITED}, {lock_key: d.address_locked_until},
                          now)
        return d, ctx.trust.issuers_at(conn, d.directory_id, d.version), now

    def issue(conn: Connection, checked: tuple[CodeRow, list[str], datetime]) -> dict[str, Any]:
        d, issuers, now = checked
        lim = ctx.settings.login
        hits = []
        if address:
            # Per client of a code, per client overall: one client cannot spend everyone's.
            hits += [(f"chal:code:{d.id}:{address}", lim.challenges_per_code_per_minute),
                     (f"chal:addr:{address}", lim.challenges_per_address_per_minute)]
        net = prefix(address)
        if net:
            # A fair share of the directory per network prefix: one source rotating its
            # addresses cannot spend the directory's ceiling for everyone else.
            hits.append((f"chal:net:{d.directory_id}:{net}",
                         lim.challenges_per_prefix_per_minute))
        hits.append((f"chal:dir:{d.directory_id}", lim.challenges_per_directory_per_minute))
        row, body = challenge_row(ctx, d.directory_id, kinds.Purpose.PRE_SESSION, now=now,
                                  issuers=issuers, address=address, registration_code_id=d.id,
                                  client=client.record())
        event = audit.event("challenge.issue", "success", directory_id=d.directory_id,
                            client_address=address, challenge_id=body["challenge_id"],
                            purpose="pre_session")
        counted = record_challenge(conn, [key for key, _ in hits],
                                   now - timedelta(seconds=RATE_WINDOW_S), now, row, event)
        # A refusal rolls this transaction back: no counter moves, no challenge is stored.
        limits.over_limit(hits, counted, RATE_WINDOW_S, now)
        return body

    return audited(ctx, attempt, lambda: ctx.db.read_then_write(
        check, issue, name="issue_login_challenge"))


#: The window of the challenge rate limits (``login.challenges_per_*_per_minute``).
RATE_WINDOW_S = 60


def _auth_token_row(ctx: BrokerContext, user: MappedUser, method: kinds.AuthMethod,
                    now: datetime, cert_der: bytes | None = None,
                    fingerprint: str | None = None, client: dict[str, str] | None = None
                    ) -> tuple[str, datetime, dict[str, Any]]:
    """A new auth token for ``user``: the token, its expiry and its row (the token itself is
    never stored, only its hash)."""
    token = new_token("sbt")
    expires = now + timedelta(seconds=ctx.settings.login.auth_token_ttl_s)
    return token, expires, {
        "token_hash": token_hash(token), "user_id": user.id, "directory_id": user.directory_id,
        "method": method, "cert_fingerprint": fingerprint, "cert_der": cert_der,
        "client": client, "expires_at": expires, "revoked_at": None, "created_at": now}


def _issue_auth_token(ctx: BrokerContext, conn: Connection, user: MappedUser,
                      method: kinds.AuthMethod, now: datetime,
                      client: dict[str, str] | None = None) -> tuple[str, datetime]:
    """Store a new auth token for ``user`` (one INSERT) and return it with its expiry."""
    token, expires, row = _auth_token_row(ctx, user, method, now, client=client)
    conn.execute(INSERT_AUTH_TOKEN, row)
    return token, expires


def _login_body(user: MappedUser, token: str, expires: datetime,
                method: kinds.AuthMethod) -> dict[str, Any]:
    return {"auth_token": token, "expires_at": rfc3339(expires), "method": method.value,
            "user": {"username": user.username, "upn": user.upn, "email": user.email,
                     "directory_id": user.directory_id},
            "workspaces": [w.as_dict() for w in user.workspaces]}


def respond_to_challenge(ctx: BrokerContext, challenge_id: str, certificate_b64: str,
                         chain_b64: list[str], signature_b64: str, algorithm: str,
                         address: str | None) -> dict[str, Any]:
    """POST /v1/auth/challenges/{id}/response: verify, map, consume, hand out a token.

    On the Core hot path: one read (the challenge, its directory's version, the locks), the
    verification outside any transaction, the user with WorkSpaces (a read), then the grant
    (:func:`broker.store.logins.spend_and_grant`: consume, auth token, audit event, and the
    certificate's failure counter cleared when the first read saw one), which writes only if
    it spent the challenge. On PostgreSQL the grant is one statement and all three run in
    autocommit: three round trips; on SQLite the last two are one write transaction."""
    attempt = Attempt("login.smart_card", address, challenge_id=challenge_id)

    client: list[dict[str, str] | None] = [None]  # the client the challenge was issued to

    def read_challenge(conn: Connection) -> tuple[bytes, TrustSnapshot, bool]:
        now = ctx.now()
        cert_key = f"fail:cert:{attempt.fingerprint}"
        # One read for the challenge and both throttles that apply before any verification.
        locks = {cert_key: Code.LOCKED_OUT, **address_throttle(attempt)}
        row = conn.execute(CHALLENGE_FOR_RESPONSE, {
            "challenge_id": challenge_id if len(challenge_id) <= MAX_ID else None,
            "cert_key": cert_key, "address_key": address_key(address)}).first()
        if row is None:
            limits.check_locks(conn, locks, now)
            raise ServiceError(Code.CHALLENGE_UNKNOWN, "There is no such challenge.")
        limits.locked(locks, {cert_key: row.cert_locked_until,
                              address_key(address) or "": row.address_locked_until}, now)
        check_row(row.used_at, row.expires_at, now)
        if row.purpose != kinds.Purpose.PRE_SESSION:
            raise ServiceError(Code.CHALLENGE_UNKNOWN, "This is not a login challenge.")
        if row.version is None:  # the directory was deleted
            raise ServiceError(Code.CHALLENGE_UNKNOWN, "There is no such challenge.")
        attempt.directory_id = row.directory_id
        client[0] = row.client
        return (row.to_be_signed, ctx.trust.snapshot_at(conn, row.directory_id, row.version),
                row.cert_failures is not None)

    def mapped(conn: Connection, verified: Verified, snap: TrustSnapshot,
               found: LdapUser | None) -> MappedUser:
        """The user with WorkSpaces, by one read (an LDAP user without a name row has none)."""
        if found is not None:
            user = find_ldap_user(conn, snap.directory_id, found)
        else:
            user = map_user(conn, snap.directory_id, verified.identity, snap.certmap)
        if user is None or not any(w.protocol == kinds.Protocol.WSP for w in user.workspaces):
            raise ServiceError(Code.SMART_CARD_REQUIRES_WSP,
                               "Smart cards work only with WorkSpaces streamed over WSP, and "
                               "this user has none.")
        return user

    def grant(conn: Connection, user: MappedUser, verified: Verified, had_failures: bool,
              found: LdapUser | None) -> dict[str, Any]:
        now = ctx.now()
        token, expires, row = _auth_token_row(ctx, user, kinds.AuthMethod.SMART_CARD, now,
                                              verified.cert_der, verified.fingerprint, client[0])
        event = audit.event(
            "login.smart_card", "success", directory_id=user.directory_id,
            username=user.username, client_address=address,
            cert_fingerprint=verified.fingerprint, challenge_id=challenge_id,
            certificate={"subject": verified.identity.subject,  # as refusals show it
                         "upn": verified.identity.upn},
            revocation_soft_fail=verified.soft_fail or None,
            verification=verified.evidence or None,
            ldap={"rule": found.rule, "dn": found.dn} if found else None,
            certmap_rule=found.rule if found else user.rule)
        # The single use, the token and the audit event together (and a success forgets the
        # certificate's earlier failures): one statement on PostgreSQL.
        if not spend_and_grant(conn, challenge_id, now, row, event,
                               f"fail:cert:{verified.fingerprint}" if had_failures else None):
            refuse_unspent(conn, challenge_id)
        return _login_body(user, token, expires, kinds.AuthMethod.SMART_CARD)

    def run() -> dict[str, Any]:
        cert_der = der_certificate(certificate_b64)
        attempt.fingerprint = cert_fingerprint(cert_der)
        attempt.certificate_der = cert_der
        chain = [der_certificate(c, "chain certificate") for c in chain_b64]
        signature = decode_b64(signature_b64, "signature_invalid", "signature")
        tbs, snap, had_failures = ctx.db.run(read_challenge, read_only=True)
        verified = verify_card_response(ctx, snap, tbs, cert_der, chain, signature, algorithm,
                                        on_key_proven=attempt.prove_key)
        found = None
        if snap.ldap is not None:  # one search at most, outside any transaction
            found = ldap_lookup(attempt, lambda: ctx.ldap.lookup(
                snap.ldap, verified.identity, verified.cert_der, snap.certmap))
        return ctx.db.read_then_write(
            lambda c: mapped(c, verified, snap, found),
            lambda c, user: grant(c, user, verified, had_failures, found),
            autocommit=True, name="grant")

    return audited(ctx, attempt, run)


def ldap_lookup(attempt: Attempt, fn: Any) -> Any:
    """Run an LDAP lookup; a refusal's rule and entry DN go into the attempt's audit event."""
    try:
        return fn()
    except LdapRefusal as exc:
        attempt.details.update({k: exc.details[k] for k in ("rule", "dn", "dns")
                                if k in exc.details})
        raise


def password_login(ctx: BrokerContext, code: str, username: str, password: str,
                   address: str | None, client: ClientSpec | None = None) -> dict[str, Any]:
    """POST /v1/auth/password, where the directory allows it. ``client`` (optional: None is an
    unknown client) is recorded with the login and decides its sessions' in-session use.

    One write transaction on Core: the code with its directory and the address's lock, the
    other locks (user from this address, user anywhere, the address vouched for), the user with
    WorkSpaces, then the token, the counters and the audit event. A directory whose users live
    in LDAP answers from that transaction with its settings: the bind runs outside any
    transaction, then a second one grants."""
    attempt = Attempt("login.password", address, username=username[:200])
    record = client.record() if client else None

    def grant(conn: Connection, user: MappedUser, known_key: str | None,
              **audited_details: Any) -> dict[str, Any]:
        now = ctx.now()
        token, expires = _issue_auth_token(ctx, conn, user, kinds.AuthMethod.PASSWORD, now,
                                           client=record)
        if attempt.pair_key:
            limits.clear(conn, attempt.pair_key)
        if known_key:
            limits.mark(conn, known_key, now + timedelta(seconds=KNOWN_ADDRESS_S), now)
        audit.insert(conn, "login.password", "success", directory_id=user.directory_id,
                     username=user.username, client_address=address, **audited_details)
        return _login_body(user, token, expires, kinds.AuthMethod.PASSWORD)

    def check(conn: Connection) -> dict[str, Any] | tuple[LdapSettings, str | None]:
        now = ctx.now()
        lock_key = address_key(address)
        d = lookup_code(ctx, conn, code, now, address_key=lock_key)
        attempt.directory_id = d.directory_id
        if not d.password_login:
            raise ServiceError(Code.PASSWORD_LOGIN_DISABLED,
                               "This directory does not allow password login.")
        if lock_key:
            limits.locked({lock_key: Code.RATE_LIMITED}, {lock_key: d.address_locked_until},
                          now)
        attempt.user_key = bounded(f"fail:user:{d.directory_id}:{username}")
        attempt.pair_key = bounded(f"fail:pair:{d.directory_id}:{address or '-'}:{username}")
        known_key = bounded(f"ok:{d.directory_id}:{address}:{username}") if address else None
        found = limits.read_locks(conn, [k for k in (attempt.pair_key, attempt.user_key,
                                                     known_key) if k], now)
        locks = {attempt.pair_key: Code.LOCKED_OUT}
        if not (known_key and known_key in found):
            # Slowed for everyone but the addresses she has logged in from.
            locks[attempt.user_key] = Code.RATE_LIMITED
        limits.locked(locks, found, now)
        if d.ldap_url:  # bound as the user outside this transaction
            ldap = settings_of(conn.execute(DIRECTORY_LDAP,
                                            {"directory_id": d.directory_id}).one())
            if ldap is not None:
                return ldap, known_key
        rows = conn.execute(USER_BY_NAME_WITH_WORKSPACES, {
            "directory_id": d.directory_id, "username": username}).all()
        row = rows[0] if rows else None
        ok = verify_password(password, row.password_hash if row else None)
        if not ok or row is None or row.disabled:
            raise ServiceError(Code.INVALID_CREDENTIALS, "The user name or password is wrong.")
        user = MappedUser(row.id, row.directory_id, row.username, row.upn, row.email,
                          listings(rows))
        return grant(conn, user, known_key)

    def run() -> dict[str, Any]:
        answer = ctx.db.run(check, name="password_login")
        if isinstance(answer, dict):
            return answer
        settings, known_key = answer  # bind as the user outside any transaction
        found = ldap_lookup(attempt, lambda: ctx.ldap.password_login(settings, username,
                                                                     password))
        if found is None:
            raise ServiceError(Code.INVALID_CREDENTIALS, "The user name or password is wrong.")

        def grant_ldap(conn: Connection) -> dict[str, Any]:
            user = map_ldap_user(conn, attempt.directory_id or "", found)
            return grant(conn, user, known_key, ldap={"rule": "password", "dn": found.dn})

        return ctx.db.run(grant_ldap)

    return audited(ctx, attempt, run)
