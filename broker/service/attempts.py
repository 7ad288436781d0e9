"""One audited attempt: what a refusal's audit event needs, and what it counts against.

Login-like calls (smart-card response, logon, in-session response, password login, challenge
requests) fill an :class:`Attempt` as they learn things (directory, certificate, whether the
presenter proved possession of the key) and run inside :func:`audited`. A refusal rolls back the
attempt's own transactions; ``audited`` then writes its audit event and its failure counts in
one transaction of their own, and re-raises.

What a failure counts against (shared by every process, in the database):

* the **source address** (``fail:addr:<ip>``): any failed answer or password; at
  ``login.failures_per_address`` within ``login.lockout_s`` that address gets 429 rate_limited;
* the **challenge** (``fail:chal:<id>``): at ``login.failures_per_challenge`` wrong answers
  the challenge is spent;
* the **certificate** (``fail:cert:<sha256>``): only failures *after* the signature verified,
  i.e. by someone holding the card's key — a stranger with a copy of a public certificate can
  never lock its owner out;
* a password login's **user name from one address** (``fail:pair:<dir>:<ip>:<name>``): at
  ``login.max_failures`` within ``login.lockout_s`` that address is locked out for that user —
  and only that address: someone guessing elsewhere cannot lock her out of her own desk;
* the **user name** from all addresses (``fail:user:<dir>:<name>``): past
  ``login.failures_per_user`` each further failure makes the next attempt wait 1, 2, 4 … s
  (at most ``login.lockout_s``; 429 rate_limited), except from an address the user has logged
  in from within :data:`KNOWN_ADDRESS_S` (``ok:<dir>:<ip>:<name>``).

User names are counted exactly as given (the lookup is exact too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection

from broker.codes import Code
from broker.errors import BrokerError
from broker.service import audit, limits
from broker.service.challenges import spend
from broker.service.context import BrokerContext

T = TypeVar("T")

#: Refusals that say something about the presented credential (not replays or expiries).
GUESSY = frozenset({Code.SIGNATURE_INVALID, Code.USER_NOT_FOUND, Code.USER_AMBIGUOUS,
                    Code.INVALID_CREDENTIALS, Code.CERTIFICATE_MISMATCH})


def is_guessy(code: str) -> bool:
    return code in GUESSY or code.startswith("certificate_")


@dataclass
class Attempt:
    """What the audit of one attempt needs, filled in as the attempt goes."""

    kind: str
    address: str | None
    challenge_id: str | None = None
    directory_id: str | None = None
    fingerprint: str | None = None
    #: The signature verified: whoever sent this holds the certificate's private key.
    key_proven: bool = False
    username: str | None = None
    user_key: str | None = None  # password login: the fail:user key (slow-down)
    pair_key: str | None = None  # password login: the fail:pair key (user from this address)
    details: dict[str, Any] = field(default_factory=dict)
    #: The presented certificate (DER): a refusal's audit names its subject and UPN.
    certificate_der: bytes | None = None

    def prove_key(self) -> None:
        self.key_proven = True


#: How long a successful password login vouches for its address (not slowed for that user).
KNOWN_ADDRESS_S = 30 * 86400


def prefix(address: str | None) -> str | None:
    """The network an address stands for when sharing capacity: its IPv4 /24 or IPv6 /64
    (one host controls many addresses of its own prefix, few of other prefixes)."""
    import ipaddress

    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bits = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


def bounded(key: str) -> str:
    """``key`` fitted to the counters' 200 characters (a long tail becomes its SHA-256)."""
    import hashlib

    if len(key) <= 200:
        return key
    return key[:136] + "#" + hashlib.sha256(key.encode()).hexdigest()


def address_key(address: str | None) -> str | None:
    return f"fail:addr:{address}" if address else None


def address_throttle(attempt: Attempt) -> dict[str, Code]:
    """The lock to check for the attempt's source address (as limits.locked takes it)."""
    key = address_key(attempt.address)
    return {key: Code.RATE_LIMITED} if key else {}


def certmap_decision(details: dict[str, Any]) -> dict[str, Any]:
    """The audit detail ``certmap_rule`` of a card login's mapping refusal: the rule that
    decided (ambiguous, refused entry) or the rules tried (no user found); empty otherwise."""
    rule = details.get("rule", details.get("rules"))
    return {"certmap_rule": rule} if rule else {}


def audited(ctx: BrokerContext, attempt: Attempt, fn: Callable[[], T],
            *, quiet: frozenset[str] = frozenset()) -> T:
    """Run ``fn``; on a BrokerError (other than ``quiet`` codes) audit and count, re-raise."""
    try:
        return fn()
    except BrokerError as exc:
        if exc.code not in quiet:
            record_refusal(ctx, attempt, exc)
        raise


_REFUSAL_EVIDENCE = ("check", "subject", "detail", "path", "paths_tried", "aia_fetches",
                     "openssl_error", "policy_inputs")


def presented(der: bytes | None) -> dict[str, Any] | None:
    """Who the refused certificate names (subject, UPN, e-mail), parsed only on refusal so a
    successful login pays nothing; None when there is none or it does not parse."""
    if not der:
        return None
    from cryptography import x509

    from broker.pki.identity import identity_of

    try:
        ident = identity_of(x509.load_der_x509_certificate(der))
    except ValueError:
        return None
    return {"subject": ident.subject, "upn": ident.upn, "emails": list(ident.emails) or None}


def record_refusal(ctx: BrokerContext, attempt: Attempt, exc: BrokerError) -> None:
    lim = ctx.settings.login
    counted = is_guessy(exc.code)
    reasons = exc.details.get("reasons")
    # What a path refusal rests on (the RFC 5280 check, the certificate at fault, the path
    # judged, caIssuers fetches), so the audit view answers "why was this card refused".
    extra: dict[str, Any] = {"reasons": reasons} if reasons else {}
    verification = {k: exc.details[k] for k in _REFUSAL_EVIDENCE if k in exc.details}
    if verification:
        extra["verification"] = verification
    certificate = presented(attempt.certificate_der)
    if certificate:
        extra["certificate"] = certificate

    if attempt.fingerprint:
        extra.update(certmap_decision(exc.details))

    def work(conn: Connection) -> None:
        now = ctx.now()
        audit.insert(conn, attempt.kind, "refused", reason=exc.code,
                     directory_id=attempt.directory_id, client_address=attempt.address,
                     cert_fingerprint=attempt.fingerprint, username=attempt.username,
                     challenge_id=attempt.challenge_id[:64] if attempt.challenge_id else None,
                     **extra, **attempt.details)
        if not counted:
            return
        key = address_key(attempt.address)
        if key:
            limits.record_failure(conn, key, lim.failures_per_address, lim.lockout_s, now)
        if attempt.challenge_id and len(attempt.challenge_id) <= 64:
            if limits.record_failure(conn, f"fail:chal:{attempt.challenge_id}",
                                     lim.failures_per_challenge, lim.challenge_ttl_s, now):
                spend(conn, attempt.challenge_id, now)  # too many wrong answers: spent
        if attempt.fingerprint and attempt.key_proven:
            limits.record_failure(conn, f"fail:cert:{attempt.fingerprint}", lim.max_failures,
                                  lim.lockout_s, now)
        if attempt.pair_key:
            limits.record_failure(conn, attempt.pair_key, lim.max_failures, lim.lockout_s, now)
        if attempt.user_key:
            limits.record_slowdown(conn, attempt.user_key, lim.failures_per_user,
                                   lim.lockout_s, now)

    ctx.db.run(work, name="record_refusal")
