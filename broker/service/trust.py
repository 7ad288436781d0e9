"""Verifying a card's answer for one directory: the trust snapshot, cached stores, verdicts.

:func:`load_trust` reads what a directory trusts in one transaction; :func:`verify_card_response`
then checks signature, chain, revocation and (for logins) maps the certificate to a user, outside
any transaction because OCSP and CRL fetches may block.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from broker.codes import Code
from broker.kinds import (
    DEFAULT_CERTMAP,
    CertmapRule,
    Protocol,
    RunningMode,
    TrustKind,
    WorkSpaceState,
)
from broker.pki.identity import CertIdentity
from broker.pki.settings import PkiSettings
from broker.service.errors import ServiceError
from broker.service.ldapdir import LdapUser, settings_of
from broker.service.wire import cert_fingerprint
from broker.store.models import Crl, Directory, TrustCertificate

if TYPE_CHECKING:
    # Only a type: the context builds the trust cache, not the other way round.
    from broker.service.context import BrokerContext


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
    certmap: tuple[CertmapRule, ...]
    #: The directory's path-validation settings (verify_certificate keyword arguments).
    pki: PkiSettings = PkiSettings()
    #: The directory's LDAP settings (broker.service.ldapdir.LdapSettings); None: own users.
    ldap: Any = None

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.directory_id, self.anchors, self.intermediates, self.crls)


def load_trust(session: Session, d: Directory) -> TrustSnapshot:
    certs = list(session.scalars(select(TrustCertificate).where(
        TrustCertificate.directory_id == d.id).order_by(TrustCertificate.id)))
    crls = list(session.scalars(select(Crl).where(Crl.directory_id == d.id).order_by(Crl.id)))
    return TrustSnapshot(
        directory_id=d.id,
        anchors=tuple(c.der for c in certs if c.kind == TrustKind.ANCHOR),
        intermediates=tuple(c.der for c in certs if c.kind == TrustKind.INTERMEDIATE),
        crls=tuple(c.der for c in crls), crl_on=d.revocation_crl, ocsp_on=d.revocation_ocsp,
        fail_mode=d.revocation_fail_mode, required_eku=d.required_eku,
        certmap=tuple(map(CertmapRule, d.certmap or DEFAULT_CERTMAP)),
        pki=PkiSettings.of_directory(d),
        ldap=settings_of(d))


def accepted_issuers(session: Session, directory_id: str) -> list[str]:
    return [c.subject for c in session.scalars(select(TrustCertificate).where(
        TrustCertificate.directory_id == directory_id).order_by(TrustCertificate.id))]


@dataclass
class _Entry:
    version: int
    snapshot: TrustSnapshot
    issuers: list[str]
    store: Any = None


class TrustCache:
    """Per directory, what a login needs that only an admin change alters: the trust snapshot,
    the accepted issuers and the parsed trust store.

    Keyed by the directory's ``version`` (bumped in the same transaction as every change to
    the directory or its trust material), so each process notices a change on the next request
    that reads the directory row — which every login does anyway. Bounded (least recently used
    directories are dropped). Thread-safe: the thread pool shares one instance.
    """

    def __init__(self, max_directories: int = 1024) -> None:
        self.max_directories = max_directories
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def _cached(self, directory_id: str, version: int) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(directory_id)
            if entry is not None and entry.version == version:
                self._entries.move_to_end(directory_id)
                return entry
        return None

    def _keep(self, directory_id: str, entry: _Entry) -> _Entry:
        with self._lock:
            self._entries[directory_id] = entry
            self._entries.move_to_end(directory_id)
            while len(self._entries) > self.max_directories:
                self._entries.popitem(last=False)
        return entry

    def _entry(self, session: Session, d: Directory) -> _Entry:
        entry = self._cached(d.id, d.version)
        if entry is not None:
            return entry
        return self._keep(d.id, _Entry(d.version, load_trust(session, d),
                                       accepted_issuers(session, d.id)))

    def _entry_at(self, conn: Connection, directory_id: str, version: int) -> _Entry:
        """The entry for a directory whose version the caller read on ``conn`` (Core hot path):
        no statement at all when the cache holds that version, else one load on ``conn``."""
        entry = self._cached(directory_id, version)
        if entry is not None:
            return entry
        with Session(bind=conn) as session:  # joins conn's transaction, never ends it
            d = session.get(Directory, directory_id)
            if d is None:
                raise ServiceError(Code.DIRECTORY_UNKNOWN, "The directory no longer exists.")
            return self._entry(session, d)

    def snapshot_at(self, conn: Connection, directory_id: str, version: int) -> TrustSnapshot:
        return self._entry_at(conn, directory_id, version).snapshot

    def issuers_at(self, conn: Connection, directory_id: str, version: int) -> list[str]:
        return list(self._entry_at(conn, directory_id, version).issuers)

    def store(self, snap: TrustSnapshot) -> Any:
        """The parsed TrustStore of a snapshot this cache handed out (built once)."""
        from broker.pki import TrustStore

        with self._lock:
            entry = self._entries.get(snap.directory_id)
            if entry is not None and entry.snapshot is snap and entry.store is not None:
                return entry.store
        pem = [x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM)
               for d in snap.anchors]
        inter = [x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM)
                 for d in snap.intermediates]
        crls = [x509.load_der_x509_crl(d).public_bytes(serialization.Encoding.PEM)
                for d in snap.crls]
        store = TrustStore.from_pem(pem, intermediates=inter, crls=crls)
        with self._lock:
            entry = self._entries.get(snap.directory_id)
            if entry is not None and entry.snapshot is snap:
                entry.store = store
        return store


@dataclass(frozen=True)
class Verified:
    fingerprint: str
    cert_der: bytes
    identity: CertIdentity
    soft_fail: list[str]
    evidence: dict[str, Any] = field(default_factory=dict)  # what the verdict rests on


@dataclass(frozen=True)
class WorkSpaceListing:
    """One WorkSpace as a login answer lists it."""

    id: str
    name: str
    protocol: Protocol
    running_mode: RunningMode
    state: WorkSpaceState

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "protocol": self.protocol,
                "running_mode": self.running_mode, "state": self.state}


def listings(rows: Iterable[Any], user_id: int | None = None) -> list[WorkSpaceListing]:
    """The WorkSpaces of rows carrying ``ws_id``, ``ws_name``, ``protocol``, ``running_mode``
    and ``state`` (those of ``user_id`` only, when the rows carry several users' ``id``)."""
    return [WorkSpaceListing(r.ws_id, r.ws_name, r.protocol, r.running_mode, r.state)
            for r in rows if r.ws_id is not None and (user_id is None or r.id == user_id)]


@dataclass(frozen=True)
class MappedUser:
    """The user a login found, with its WorkSpaces (as the login answer lists them) and the
    certmap rule that decided it (None for a password login)."""

    id: int
    directory_id: str
    username: str
    upn: str | None
    email: str | None
    workspaces: list[WorkSpaceListing]
    rule: CertmapRule | None = None


def map_user(conn: Connection, directory_id: str, ident: CertIdentity,
             rules: Sequence[CertmapRule]) -> MappedUser:
    """The one enabled user the certificate maps to, rule by rule in certmap order, with the
    user's WorkSpaces in the same statement.

    Each rule is one indexed lookup (never a load of the directory's users); the decision on
    what it finds is :func:`broker.pki.identity.map_certificate`'s, so the rules and the errors
    (user_not_found, user_ambiguous) are exactly the same as mapping in memory. The rule that
    decided is returned with the user (``rule``); a refusal's details name the rule
    (ambiguous) or the rules tried (not found)."""
    from broker.pki.errors import PkiError
    from broker.pki.identity import UserRecord, map_certificate
    from broker.store.statements import USER_WITH_WORKSPACES

    for rule in rules:
        offered = rule.cert_values(ident)
        if not offered:
            continue
        values = {"values": list(offered)} if rule.many else {"value": offered[0]}
        rows = conn.execute(USER_WITH_WORKSPACES[rule],
                            {"directory_id": directory_id, **values}).all()
        users = {r.id: r for r in rows}
        records = [UserRecord(username=u.username, upn=u.upn, email=u.email, subject=u.subject,
                              fingerprint=u.cert_fingerprint) for u in users.values()]
        try:
            found = map_certificate(ident, [rule], records)
        except PkiError as exc:
            if exc.code == Code.USER_NOT_FOUND:
                continue
            raise
        user = next(u for u in users.values() if u.username == found.username)
        return MappedUser(user.id, user.directory_id, user.username, user.upn, user.email,
                          listings(rows, user.id), rule)
    raise ServiceError(Code.USER_NOT_FOUND, "No user of this directory matches the certificate.",
                       {"rules": [r.value for r in rules]})


def name_row(conn: Connection, directory_id: str, username: str) -> int:
    """The id of the name row of an LDAP user (created on first use: the anchor of the
    user's WorkSpaces and tokens; the directory keeps everything else). Concurrent first
    logins of one user insert once (ON CONFLICT DO NOTHING)."""
    from sqlalchemy.dialects import postgresql, sqlite

    from broker.store.models import User

    table: Any = User.__table__
    found = conn.execute(select(table.c.id).where(table.c.directory_id == directory_id,
                                                  table.c.username == username)).scalar()
    if found is not None:
        return int(found)
    dialect_insert: Any = (postgresql.insert if conn.dialect.name == "postgresql"
                           else sqlite.insert)
    from broker.store.models import utcnow

    conn.execute(dialect_insert(table).values(
        directory_id=directory_id, username=username, disabled=False, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["directory_id", "username"]))
    return int(conn.execute(select(table.c.id).where(
        table.c.directory_id == directory_id, table.c.username == username)).scalar_one())


def map_ldap_user(conn: Connection, directory_id: str, found: LdapUser) -> MappedUser:
    """The MappedUser of an entry the directory's LDAP server gave, with its WorkSpaces and the
    rule the server found it by (None for a password bind)."""
    from broker.store.statements import WORKSPACES_OF_USER

    user_id = name_row(conn, directory_id, found.username)
    return _ldap_mapped(user_id, directory_id, found,
                        conn.execute(WORKSPACES_OF_USER, {"user_id": user_id}).all())


def find_ldap_user(conn: Connection, directory_id: str, found: LdapUser) -> MappedUser | None:
    """:func:`map_ldap_user` without writing, in one read: None when the user has no name row
    yet (so no WorkSpaces either: the row is made when the first one is)."""
    from broker.store.statements import USER_BY_NAME_WITH_WORKSPACES

    rows = conn.execute(USER_BY_NAME_WITH_WORKSPACES, {"directory_id": directory_id,
                                                       "username": found.username}).all()
    return _ldap_mapped(rows[0].id, directory_id, found, rows) if rows else None


def _ldap_mapped(user_id: int, directory_id: str, found: LdapUser,
                 workspace_rows: Sequence[Any]) -> MappedUser:
    """The MappedUser of the LDAP entry ``found`` whose name row is ``user_id``: the entry's
    names, the WorkSpaces of ``workspace_rows`` and the rule the server found it by."""
    rule = CertmapRule(found.rule) if found.rule in set(CertmapRule) else None
    return MappedUser(user_id, directory_id, found.username, found.upn, found.email,
                      listings(workspace_rows), rule)


@functools.lru_cache(maxsize=1024)
def parsed_certificate(cert_der: bytes) -> x509.Certificate:
    """The certificate of ``cert_der``, parsed once per process for the last 1024 cards seen
    (a returning card presents the same bytes at every login; cryptography's certificates are
    immutable). A malformed one raises each time: errors are not cached."""
    from broker.pki import parse_certificate

    return parse_certificate(cert_der)


def verify_card_response(ctx: BrokerContext, snap: TrustSnapshot, tbs: bytes, cert_der: bytes,
                         chain_der: list[bytes], signature: bytes, algorithm: str,
                         *, on_key_proven: Any = None) -> Verified:
    """Signature, chain and revocation; raises BrokerError with the stable code. The user the
    certificate maps to is found afterwards, by :func:`map_user`, in the deciding transaction.

    ``cert_der`` is canonical DER (:func:`broker.service.wire.der_certificate`). Once the
    signature verifies, the presenter holds the certificate's key and ``on_key_proven()`` is
    called: later refusals are evidence against that key, earlier ones are not. Runs outside any
    transaction (OCSP and CRL fetches may block; this is a worker thread).
    """
    from broker.metrics import observed_fetch
    from broker.pki import RevocationSettings, verify_certificate
    from broker.pki.revocation import urllib_fetch
    from broker.pki.signatures import verify_signature

    leaf = parsed_certificate(cert_der)
    verify_signature(leaf, tbs, signature, algorithm)
    if on_key_proven is not None:
        on_key_proven()
    result = verify_certificate(
        leaf, chain_der, ctx.trust.store(snap), at=ctx.now(),
        purpose=snap.required_eku,
        revocation=RevocationSettings(crl=snap.crl_on, ocsp=snap.ocsp_on,
                                      fail_mode=snap.fail_mode),
        cache=ctx.revocation_cache, fetch=observed_fetch(urllib_fetch), **snap.pki.verify_kwargs())
    return Verified(cert_fingerprint(cert_der), cert_der, result.identity,
                    list(result.soft_fail_reasons), result.evidence())


def default_algorithm(cert_der: bytes) -> str:
    """The signature algorithm a card uses for this certificate's key when none is named."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = x509.load_der_x509_certificate(cert_der).public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ecdsa-sha384" if key.curve.key_size >= 384 else "ecdsa-sha256"
    return "rsa-pkcs1-sha256"
