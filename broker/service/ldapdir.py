"""Directories backed by LDAP / Active Directory (shared/DESIGN.md §11).

A directory with an ``ldap`` setting keeps its users in the organisation's directory: a login
maps the certificate to an entry with ONE search (every certmap rule's clause in one ``|``
filter, values escaped per RFC 4515; the rules then decide in order on what came back), checks
the account's state (AD: ``userAccountControl`` disabled, ``accountExpires`` past; required
groups with nested membership via LDAP_MATCHING_RULE_IN_CHAIN) and answers the user's name by
``user_name_attribute``. The broker keeps only a name row per user (the anchor of its WorkSpaces
and tokens), never the user's identity or state.

Client: python-ldap (OpenLDAP's libldap). Every call blocks, so it runs in the thread pool
like database work (the login use cases already run there); the reactor never waits on LDAP.
Each call is bounded by ``timeout_s`` (connect, TLS handshake and each operation), and an
unreachable or silent server is ``directory_unavailable`` (503, Retry-After). Per process: a
small pool of bound connections per directory, and a cache of answers (positive for
``cache_ttl_s``, negative for less).

The bind password is read from ``bind_password_file`` at bind time (refused when the file is
group- or world-readable, like ssh does for keys); it is never stored, exported, logged or
audited.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from broker.codes import Code
from broker.kinds import CertmapRule, LdapFlavour
from broker.service.errors import ServiceError

log = logging.getLogger(__name__)

FLAVOURS = tuple(f.value for f in LdapFlavour)
#: Certmap rules only an LDAP directory has (a local directory has no such user column).
LDAP_RULES = tuple(r.value for r in CertmapRule if r.ldap_only)
#: Default attribute of each certmap rule, per flavour (``attributes`` overrides).
DEFAULT_ATTRIBUTES: dict[str, dict[str, str]] = {
    "ad": {"upn": "userPrincipalName", "email": "mail", "certificate": "userCertificate",
           "alt_security_identities": "altSecurityIdentities",
           "alt_security_identities_weak": "altSecurityIdentities"},
    "generic": {"email": "mail", "certificate": "userCertificate;binary"},
}
DEFAULT_NAME_ATTRIBUTE = {"ad": "sAMAccountName", "generic": "uid"}
DEFAULT_USER_FILTER = {"ad": "(&(objectCategory=person)(objectClass=user))",
                       "generic": "(objectClass=inetOrgPerson)"}
UF_ACCOUNTDISABLE = 0x2
IN_CHAIN = "1.2.840.113556.1.4.1941"  # LDAP_MATCHING_RULE_IN_CHAIN
#: A negative answer (no such user, refused state) is kept at most this long.
NEGATIVE_TTL_S = 30
POOL_SIZE = 4
#: Users the console's users page reads from an LDAP directory at most (one paged search).
BROWSE_LIMIT = 100
_AD_EPOCH_OFFSET = 116444736000000000  # 100 ns ticks from 1601-01-01 to 1970-01-01
_AD_NEVER = (0, 0x7FFFFFFFFFFFFFFF)


# --------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class LdapSettings:
    """A directory's ``ldap`` setting with the flavour's defaults filled in."""

    directory_id: str
    url: str
    start_tls: bool
    ca_file: str | None
    flavour: str
    base_dn: str
    bind_dn: str | None
    bind_password_file: str | None
    user_name_attribute: str
    user_filter: str
    attributes: tuple[tuple[str, str], ...]
    required_groups: tuple[str, ...]
    cache_ttl_s: int
    timeout_s: int

    def attribute(self, rule: str) -> str | None:
        return dict(self.attributes).get(rule)

    @property
    def key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f) for f in self.__dataclass_fields__)


def settings_of(d: Any) -> LdapSettings | None:
    """The LDAP settings of a directory row (None: its users are the broker's own)."""
    if not getattr(d, "ldap_url", None):
        return None
    flavour = d.ldap_flavour or "ad"
    attributes = {**DEFAULT_ATTRIBUTES[flavour], **(d.ldap_attributes or {})}
    return LdapSettings(
        directory_id=d.id, url=d.ldap_url, start_tls=bool(d.ldap_start_tls),
        ca_file=d.ldap_ca_file, flavour=flavour, base_dn=d.ldap_base_dn or "",
        bind_dn=d.ldap_bind_dn, bind_password_file=d.ldap_bind_password_file,
        user_name_attribute=d.ldap_user_name_attribute or DEFAULT_NAME_ATTRIBUTE[flavour],
        user_filter=d.ldap_user_filter or DEFAULT_USER_FILTER[flavour],
        attributes=tuple(sorted(attributes.items())),
        required_groups=tuple(d.ldap_required_groups or ()),
        cache_ttl_s=d.ldap_cache_ttl_s if d.ldap_cache_ttl_s is not None else 300,
        timeout_s=d.ldap_timeout_s or 3)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_settings(d: Any) -> tuple[str, str] | None:
    """(field, problem) when a directory row's ``ldap`` setting cannot work, else None."""
    certmap = list(d.certmap or [])
    s = settings_of(d)
    if s is None:
        local_only = [r for r in certmap if r in LDAP_RULES]
        if local_only:
            return "certmap", (f"certmap rule {local_only[0]} needs an LDAP directory "
                               "(ldap.url)")
        return None
    parts = urlsplit(s.url)
    if parts.scheme not in ("ldap", "ldaps") or not parts.hostname or parts.path not in ("", "/"):
        return "ldap.url", "must be ldaps://HOST[:PORT] or ldap://HOST[:PORT]"
    if parts.scheme == "ldap" and not s.start_tls and not _is_loopback(parts.hostname):
        return "ldap.url", ("plain ldap:// is allowed only on loopback: use ldaps:// or "
                            "start_tls = true")
    if parts.scheme == "ldaps" and s.start_tls:
        return "ldap.start_tls", "start_tls is for ldap:// URLs; ldaps:// is TLS already"
    if not s.base_dn:
        return "ldap.base_dn", "an LDAP directory needs base_dn"
    if bool(s.bind_dn) != bool(s.bind_password_file):
        return "ldap.bind_password_file", "bind_dn and bind_password_file go together"
    if s.bind_password_file and not os.path.isabs(s.bind_password_file):
        return "ldap.bind_password_file", "must be an absolute path"
    if s.ca_file and not os.path.isabs(s.ca_file):
        return "ldap.ca_file", "must be an absolute path"
    if not (s.user_filter.startswith("(") and s.user_filter.endswith(")")):
        return "ldap.user_filter", "must be an LDAP filter in parentheses"
    for rule, _attr in d.ldap_attributes.items() if d.ldap_attributes else ():
        if rule not in ("upn", "email", "subject", "fingerprint", *LDAP_RULES):
            return "ldap.attributes", f"{rule!r} is not a certmap rule"
    for rule in certmap:
        if s.attribute(rule) is None:
            return "certmap", (f"certmap rule {rule} has no attribute in this LDAP directory "
                               f"(set ldap.attributes.{rule})")
        if rule.startswith("alt_security_identities") and s.flavour != "ad":
            return "certmap", f"certmap rule {rule} needs flavour ad"
    return None


def warnings_of(d: Any) -> list[dict[str, str]]:
    """Setting warnings of an LDAP directory (weak altSecurityIdentities mapping)."""
    if settings_of(d) is not None and "alt_security_identities_weak" in (d.certmap or []):
        return [{"code": "weak_certificate_mapping", "field": "certmap",
                 "message": "alt_security_identities_weak accepts X509:<I><S>, X509:<S> and "
                            "X509:<RFC822> mappings, which anyone with a certificate of the "
                            "same subject or email from any trusted CA satisfies; prefer the "
                            "strong forms (issuer+serial, SKI, SHA1 public key)."}]
    return []


def parse_pairs(value: Any) -> Any:
    """``attributes`` from a CLI or console as text: "upn=userPrincipalName, email=mail"."""
    if not isinstance(value, str):
        return value
    out: dict[str, str] = {}
    for part in value.split(","):
        if not part.strip():
            continue
        rule, sep, attr = part.partition("=")
        if not sep or not rule.strip() or not attr.strip():
            raise ValueError("give RULE=ATTRIBUTE pairs separated by commas")
        out[rule.strip()] = attr.strip()
    return out


# --------------------------------------------------------------------------- escaping

def escape(value: str | bytes) -> str:
    """An assertion value escaped as RFC 4515 requires (``*``, ``(``, ``)``, ``\\``, NUL, and
    every byte outside printable ASCII), so no certificate value can change a filter."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return "".join(chr(b) if 0x20 <= b < 0x7F and chr(b) not in "*()\\" else f"\\{b:02x}"
                   for b in raw)


# --------------------------------------------------------------------------- certificate values

def _ad_dn(name: Any) -> str:
    """A certificate Name as AD writes it in altSecurityIdentities: the RDNs in encoded order
    (``C=US,O=Example,CN=Issuing CA``, the reverse of RFC 4514's string)."""
    return ",".join(rdn.rfc4514_string() for rdn in name.rdns)


def alt_security_identities(cert_der: bytes, *, weak: bool) -> list[str]:
    """The altSecurityIdentities values that map ``cert_der`` (Microsoft KB5014754).

    Strong: ``X509:<I>issuer<SR>serial`` (serial bytes reversed, hex), ``X509:<SKI>ski``,
    ``X509:<SHA1-PUKEY>sha1``. Weak (only when asked): ``X509:<I>issuer<S>subject``,
    ``X509:<S>subject``, ``X509:<RFC822>email``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_der_x509_certificate(cert_der)
    out: list[str] = []
    if weak:
        out.append(f"X509:<I>{_ad_dn(cert.issuer)}<S>{_ad_dn(cert.subject)}")
        out.append(f"X509:<S>{_ad_dn(cert.subject)}")
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            out.extend(f"X509:<RFC822>{e}" for e in san.get_values_for_type(x509.RFC822Name))
        except x509.ExtensionNotFound:
            pass
        return out
    serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 7) // 8 or 1, "big")
    out.append(f"X509:<I>{_ad_dn(cert.issuer)}<SR>{serial[::-1].hex()}")
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        out.append(f"X509:<SKI>{ski.hex()}")
    except x509.ExtensionNotFound:
        pass
    digest = hashes.Hash(hashes.SHA1())  # noqa: S303 - the name AD gives this mapping
    from cryptography.hazmat.primitives import serialization
    digest.update(cert.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo))
    out.append(f"X509:<SHA1-PUKEY>{digest.finalize().hex()}")
    return out


def rule_values(rule: str, ident: Any, cert_der: bytes) -> list[str | bytes]:
    """What one certmap rule looks for in its attribute (empty: nothing to look up)."""
    if rule == "upn":
        return [ident.upn] if ident.upn else []
    if rule == "email":
        return sorted({e.lower() for e in ident.emails})
    if rule == "subject":
        return [ident.subject]
    if rule == "fingerprint":
        return [ident.fingerprint.lower()]
    if rule == "certificate":
        return [cert_der]
    if rule == "alt_security_identities":
        return list(alt_security_identities(cert_der, weak=False))
    if rule == "alt_security_identities_weak":
        return list(alt_security_identities(cert_der, weak=True))
    raise ValueError(f"unknown certmap rule {rule!r}")


def _same(rule: str, wanted: str | bytes, got: bytes) -> bool:
    if isinstance(wanted, bytes):
        return wanted == got
    return wanted.lower() == got.decode("utf-8", "replace").lower()


# --------------------------------------------------------------------------- answers

@dataclass(frozen=True)
class LdapUser:
    """The directory entry a login found, and why."""

    username: str
    dn: str
    rule: str
    upn: str | None = None
    email: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"user": self.username, "rule": self.rule, "dn": self.dn, "upn": self.upn,
                "email": self.email}


class LdapRefusal(ServiceError):
    """A refusal decided by the directory (user_not_found, account_disabled, …): carries the
    rule and entry DN for the audit event."""


def _refuse(code: Code, message: str, rule: str | None = None, dn: str | None = None,
            **more: Any) -> LdapRefusal:
    details = {k: v for k, v in {"rule": rule, "dn": dn, **more}.items() if v is not None}
    return LdapRefusal(code, message, details)


def unavailable(s: LdapSettings, why: str) -> ServiceError:
    return ServiceError(Code.DIRECTORY_UNAVAILABLE,
                        f"The directory server of {s.directory_id!r} cannot be reached "
                        f"({why}); try again shortly.",
                        {"directory": s.directory_id, "retry_after_s": s.timeout_s})


# --------------------------------------------------------------------------- connections

def read_bind_password(path: str) -> str:
    """The service account's password; refused when others may read the file (like ssh)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ServiceError(Code.DIRECTORY_UNAVAILABLE,
                           f"cannot read bind_password_file {path}: "
                           f"{exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ServiceError(Code.DIRECTORY_UNAVAILABLE,
                               f"bind_password_file {path} is readable by group or others "
                               f"(mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it")
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    return data.decode("utf-8").rstrip("\r\n")


def _connect(s: LdapSettings) -> Any:
    """A new connection with TLS set up (ldaps or StartTLS), not yet bound."""
    import ldap

    conn = ldap.initialize(s.url)
    conn.timeout = s.timeout_s  # every synchronous call waits at most this long for a result
    conn.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
    conn.set_option(ldap.OPT_REFERRALS, 0)
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, float(s.timeout_s))
    conn.set_option(ldap.OPT_TIMEOUT, float(s.timeout_s))
    conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
    if s.ca_file:
        conn.set_option(ldap.OPT_X_TLS_CACERTFILE, s.ca_file)
    conn.set_option(ldap.OPT_X_TLS_PROTOCOL_MIN, ldap.OPT_X_TLS_PROTOCOL_TLS1_2)
    conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
    if s.start_tls:
        conn.start_tls_s()
    return conn


def _bind(s: LdapSettings, conn: Any) -> None:
    if s.bind_dn and s.bind_password_file:
        conn.simple_bind_s(s.bind_dn, read_bind_password(s.bind_password_file))
    else:
        conn.simple_bind_s("", "")


class _Pool:
    """Bound connections of one directory's settings (at most POOL_SIZE idle).

    libldap bounds the TCP connect (OPT_NETWORK_TIMEOUT) and each operation (the timeout of
    python-ldap's synchronous calls) but not the TLS handshake of ldaps:// or StartTLS: a
    server that accepts and never answers would hold the calling thread forever. So a new
    connection is opened on a connector thread of its own while the caller waits at most
    ``timeout_s``; while an attempt its caller gave up on still hangs, further callers fail
    at once instead of starting more (at most one stuck thread per directory's settings).
    Attempts that merely overlap (a burst of first logins) all proceed."""

    def __init__(self, s: LdapSettings) -> None:
        self.settings = s
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        #: Threads whose caller stopped waiting (a silent server): while one lives, new
        #: connections are not attempted, so at most one thread per directory hangs.
        self._stuck: list[threading.Thread] = []

    def bounded(self, fn: Callable[[], Any], keep: Callable[[Any], None] | None = None
                ) -> Any:
        """``fn()`` on a thread of its own while the caller waits at most ``timeout_s``;
        while an earlier call its caller gave up on still hangs, fail at once (concurrent
        calls that are merely running proceed). A late result goes to ``keep``."""
        s = self.settings
        box: dict[str, Any] = {}
        taken = threading.Event()
        done = threading.Event()

        def call() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                box["error"] = exc
            with self._lock:
                if taken.is_set() and "value" in box and keep is not None:
                    keep(box.pop("value"))
            done.set()

        with self._lock:
            self._stuck = [t for t in self._stuck if t.is_alive()]
            if self._stuck:
                raise unavailable(s, "an earlier connection attempt is still unanswered")
            worker = threading.Thread(target=call, name=f"ldap-{s.directory_id}", daemon=True)
        worker.start()
        if not done.wait(s.timeout_s):
            with self._lock:
                taken.set()
                self._stuck.append(worker)  # its caller gave up: the next ones fail at once
            raise unavailable(s, f"no answer within {s.timeout_s} s")
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _open(self) -> Any:
        def connect() -> Any:
            conn = _connect(self.settings)
            _bind(self.settings, conn)
            return conn

        def keep(conn: Any) -> None:  # late, but good (called under the lock)
            if len(self._idle) < POOL_SIZE:
                self._idle.append(conn)

        return self.bounded(connect, keep)

    @contextmanager
    def connection(self) -> Iterator[Any]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._open()
        ok = False
        try:
            yield conn
            ok = True
        finally:
            if ok:
                with self._lock:
                    if len(self._idle) < POOL_SIZE:
                        self._idle.append(conn)
                        conn = None
            if conn is not None:
                try:
                    conn.unbind_s()
                except Exception:  # noqa: BLE001 - the connection is being dropped anyway
                    pass

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            try:
                conn.unbind_s()
            except Exception:  # noqa: BLE001
                pass


def _ldap_call(s: LdapSettings, fn: Callable[[], Any]) -> Any:
    """Run an LDAP call; server trouble becomes directory_unavailable (never a traceback)."""
    import ldap

    try:
        return fn()
    except ServiceError:
        raise
    except (ldap.SERVER_DOWN, ldap.TIMEOUT, ldap.CONNECT_ERROR, ldap.UNAVAILABLE,
            ldap.BUSY, ldap.TIMELIMIT_EXCEEDED) as exc:
        raise unavailable(s, _describe(exc)) from None
    except ldap.INVALID_CREDENTIALS:
        raise unavailable(s, "the service account's bind was refused") from None
    except ldap.LDAPError as exc:
        raise unavailable(s, _describe(exc)) from None
    except (ValueError, OSError) as exc:  # libldap refused the TLS setup (e.g. ca_file)
        raise unavailable(s, f"TLS setup failed ({type(exc).__name__}: {exc}); check "
                          "ca_file") from None


def _describe(exc: Exception) -> str:
    info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    text = info.get("desc", type(exc).__name__)
    if info.get("info"):
        text += f": {info['info']}"
    return str(text)[:300]


# ------------------------------------------------------------------ the per-process service

@dataclass
class _Cached:
    until: float
    value: LdapUser | LdapRefusal


@dataclass
class Health:
    ok: bool = True
    since: float = 0.0
    reason: str = ""


@dataclass
class LdapDirectories:
    """Per process: connection pools, the answer cache, and each directory's health."""

    max_cached: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _pools: dict[tuple[Any, ...], _Pool] = field(default_factory=dict)
    _cache: OrderedDict[tuple[Any, ...], _Cached] = field(default_factory=OrderedDict)
    _health: dict[str, Health] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: LDAP searches made (the bench counts round trips with it).
    searches: int = 0

    def pool(self, s: LdapSettings) -> _Pool:
        with self._lock:
            pool = self._pools.get(s.key)
            if pool is None:
                stale = [k for k in self._pools if k[0] == s.directory_id]
                for k in stale:
                    self._pools.pop(k).close()
                pool = self._pools[s.key] = _Pool(s)
            return pool

    def degraded(self) -> dict[str, str]:
        with self._lock:
            return {d: h.reason for d, h in self._health.items() if not h.ok}

    def _note(self, s: LdapSettings, ok: bool, reason: str = "") -> None:
        from broker import metrics

        with self._lock:
            self._health[s.directory_id] = Health(ok, self.clock(), reason)
        metrics.set_directory_up(s.directory_id, ok)

    def _search(self, s: LdapSettings, filt: str, attrs: list[str], *,
                base: str | None = None, scope: str = "subtree") -> list[tuple[str, dict]]:
        import ldap

        from broker import metrics

        def run() -> list[tuple[str, dict]]:
            with self.pool(s).connection() as conn:
                with self._lock:
                    self.searches += 1
                got = conn.search_ext_s(
                    base or s.base_dn,
                    ldap.SCOPE_BASE if scope == "base" else ldap.SCOPE_SUBTREE, filt, attrs,
                    timeout=s.timeout_s, sizelimit=3 if scope != "base" else 1)
                return [(dn, a) for dn, a in got if dn is not None]

        def run_once_more() -> list[tuple[str, dict]]:
            try:
                return run()
            except ldap.SERVER_DOWN:
                # A pooled connection the server dropped (restart, idle timeout): once more
                # on a new connection, which fails fast when the server is really down.
                self.pool(s).close()
                return run()

        started = time.perf_counter()
        try:
            found = _ldap_call(s, lambda: _sizelimited(run_once_more))
        except ServiceError as exc:
            if exc.code == Code.DIRECTORY_UNAVAILABLE:
                self._note(s, False, exc.message)
                metrics.observe_ldap(s.directory_id, "error", time.perf_counter() - started)
            raise
        self._note(s, True)
        metrics.observe_ldap(s.directory_id, "ok", time.perf_counter() - started)
        return found

    # ------------------------------------------------------------------ certificate logins

    def lookup(self, s: LdapSettings, ident: Any, cert_der: bytes,
               rules: Sequence[str]) -> LdapUser:
        """The one entry the certificate maps to, its state checked; LdapRefusal or
        directory_unavailable otherwise. Cached per process (refusals for less long)."""
        values = {r: rule_values(r, ident, cert_der) for r in rules}
        key = (s.key, tuple(rules), hashlib.sha256(repr(sorted(
            (r, [v if isinstance(v, str) else v.hex() for v in vs])
            for r, vs in values.items())).encode()).hexdigest())
        now = self.clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit.until > now:
                self._cache.move_to_end(key)
                value = hit.value
            else:
                value = None
        if value is None:
            try:
                value = self._lookup(s, values, rules)
                ttl = float(s.cache_ttl_s)
            except LdapRefusal as refusal:
                value = refusal
                ttl = float(min(s.cache_ttl_s, NEGATIVE_TTL_S))
            if ttl > 0:
                with self._lock:
                    self._cache[key] = _Cached(now + ttl, value)
                    while len(self._cache) > self.max_cached:
                        self._cache.popitem(last=False)
        if isinstance(value, LdapRefusal):
            raise LdapRefusal(value.code, value.message, dict(value.details))
        return value

    def _lookup(self, s: LdapSettings, values: dict[str, list[str | bytes]],
                rules: Sequence[str]) -> LdapUser:
        clauses = [_clause(s, r, v) for r in rules for v in values[r] if s.attribute(r)]
        if not clauses:
            raise _refuse(Code.USER_NOT_FOUND, "The certificate carries nothing the certmap "
                          "rules of this directory look up.", rules=list(rules))
        filt = f"(&{s.user_filter}(|{''.join(clauses)}))"
        wanted = sorted({s.user_name_attribute, "userAccountControl", "accountExpires",
                         "memberOf", "userPrincipalName", "mail",
                         *[a.split(";")[0] for r in rules if (a := s.attribute(r))]})
        entries = self._search(s, filt, wanted)
        for rule in rules:
            attr = s.attribute(rule)
            if not attr or not values[rule]:
                continue
            found = [(dn, a) for dn, a in entries
                     if any(_same(rule, v, got) for v in values[rule]
                            for got in _values(a, attr))]
            if len(found) > 1:
                raise _refuse(Code.USER_AMBIGUOUS, f"The certificate matches {len(found)} "
                              f"directory entries by {rule}; ask an administrator to fix the "
                              "mapping.", rule, None, dns=[dn for dn, _ in found][:5])
            if found:
                dn, attrs = found[0]
                return self._admit(s, rule, dn, attrs)
        raise _refuse(Code.USER_NOT_FOUND, "No user of this directory matches the "
                      "certificate.", rules=list(rules))

    def _admit(self, s: LdapSettings, rule: str, dn: str, attrs: dict[str, list[bytes]]
               ) -> LdapUser:
        """Account state and required groups of the entry a rule found."""
        name = _first(attrs, s.user_name_attribute)
        if not name:
            raise _refuse(Code.USER_NOT_FOUND, f"The directory entry has no "
                          f"{s.user_name_attribute}.", rule, dn)
        if s.flavour == "ad":
            uac = _first(attrs, "userAccountControl")
            if uac and int(uac) & UF_ACCOUNTDISABLE:
                raise _refuse(Code.ACCOUNT_DISABLED, "The directory says this account is "
                              "disabled.", rule, dn)
            expires = _first(attrs, "accountExpires")
            if expires and int(expires) not in _AD_NEVER:
                when = datetime.fromtimestamp(
                    (int(expires) - _AD_EPOCH_OFFSET) / 10_000_000, UTC)
                if when <= datetime.now(UTC):
                    raise _refuse(Code.ACCOUNT_EXPIRED, "The directory says this account "
                                  f"expired at {when.isoformat()}.", rule, dn)
        if s.required_groups:
            self._check_groups(s, rule, dn, attrs)
        return LdapUser(name, dn, rule, _first(attrs, "userPrincipalName"),
                        _first(attrs, "mail"))

    def _check_groups(self, s: LdapSettings, rule: str, dn: str,
                      attrs: dict[str, list[bytes]]) -> None:
        if s.flavour == "ad":
            # Nested membership: a base search of the entry with the in-chain rule.
            filt = "(|" + "".join(f"(memberOf:{IN_CHAIN}:={escape(g)})"
                                  for g in s.required_groups) + ")"
            if self._search(s, filt, ["1.1"], base=dn, scope="base"):
                return
        else:
            member_of = {v.decode("utf-8", "replace").lower()
                         for v in _values(attrs, "memberOf")}
            if member_of & {g.lower() for g in s.required_groups}:
                return
        raise _refuse(Code.NOT_IN_REQUIRED_GROUP, "This account is not in a group this "
                      "directory requires.", rule, dn, groups=list(s.required_groups))

    # ------------------------------------------------------------------ names and passwords

    def find_name(self, s: LdapSettings, username: str) -> str | None:
        """The DN of the user named ``username`` (user_name_attribute), or None."""
        filt = f"(&{s.user_filter}({s.user_name_attribute}={escape(username)}))"
        found = self._search(s, filt, ["1.1"])
        return found[0][0] if len(found) == 1 else None

    def password_login(self, s: LdapSettings, username: str, password: str) -> LdapUser | None:
        """Bind as the user (simple bind over TLS); the entry, or None for wrong credentials."""
        import ldap

        if not password:
            return None  # an empty password is an anonymous bind, never a login
        filt = f"(&{s.user_filter}({s.user_name_attribute}={escape(username)}))"
        found = self._search(s, filt, [s.user_name_attribute, "userAccountControl",
                                       "accountExpires", "memberOf", "userPrincipalName",
                                       "mail"])
        if len(found) != 1:
            return None
        dn, attrs = found[0]

        def bind() -> bool:
            conn = _connect(s)
            try:
                conn.simple_bind_s(dn, password)
                return True
            except ldap.INVALID_CREDENTIALS:
                return False
            finally:
                try:
                    conn.unbind_s()
                except Exception:  # noqa: BLE001
                    pass

        # A new connection's TLS handshake is unbounded in libldap: bounded like the pool's.
        if not _ldap_call(s, lambda: self.pool(s).bounded(bind)):
            return None
        return self._admit(s, "password", dn, attrs)

    def browse(self, s: LdapSettings, search: str = "", limit: int = BROWSE_LIMIT
               ) -> dict[str, Any]:
        """For the console's users page: the first ``limit`` users (``user_filter``, and a
        name containing ``search``), read with the simple paged results control (RFC 2696)
        so the server sends one bounded page; ``truncated`` when it holds more. Only the
        name, the entry DN and mail are read — never a password attribute."""
        import ldap
        from ldap.controls import SimplePagedResultsControl

        name = s.user_name_attribute
        wanted = f"({name}=*{escape(search)}*)" if search else f"({name}=*)"
        filt = f"(&{s.user_filter}{wanted})"

        def run() -> dict[str, Any]:
            with self.pool(s).connection() as conn:
                with self._lock:
                    self.searches += 1
                paged = SimplePagedResultsControl(True, size=limit, cookie=b"")
                msgid = conn.search_ext(s.base_dn, ldap.SCOPE_SUBTREE, filt,
                                        [name, "mail"], serverctrls=[paged],
                                        timeout=s.timeout_s)
                _, got, _, ctrls = conn.result3(msgid, timeout=s.timeout_s)
                cookie = b""
                for c in ctrls or []:
                    if c.controlType == SimplePagedResultsControl.controlType:
                        cookie = c.cookie
                if cookie:  # release the server's paging state
                    done = SimplePagedResultsControl(True, size=0, cookie=cookie)
                    conn.result3(conn.search_ext(s.base_dn, ldap.SCOPE_SUBTREE, filt, ["1.1"],
                                                 serverctrls=[done], timeout=s.timeout_s),
                                 timeout=s.timeout_s)
            users = sorted(({"username": _first(a, name) or "", "dn": dn,
                             "mail": _first(a, "mail") or ""}
                            for dn, a in got if dn is not None),
                           key=lambda u: u["username"].lower())
            # The control is critical: a server that cannot page refuses the search, so at
            # most ``limit`` entries ever cross the wire; a cookie means it holds more.
            return {"items": users, "truncated": bool(cookie), "limit": limit}

        found: dict[str, Any] = _ldap_call(s, run)
        self._note(s, True)
        return found

    def check(self, s: LdapSettings) -> dict[str, Any]:
        """For ``broker doctor``: bind and one search of the base entry."""
        started = time.perf_counter()
        found = self._search(s, "(objectClass=*)", ["1.1"], base=s.base_dn, scope="base")
        return {"bind": True, "search": bool(found),
                "ms": round((time.perf_counter() - started) * 1000, 1)}


def _clause(s: LdapSettings, rule: str, value: str | bytes) -> str:
    """One rule's filter clause. OpenLDAP matches userCertificate by (serial, issuer) in the
    certificateExactMatch assertion form (RFC 4523), AD by the exact DER octets; either way
    the entries found are then compared with the DER exactly."""
    attr = s.attribute(rule) or ""
    if rule == "certificate" and s.flavour == "generic" and isinstance(value, bytes):
        from cryptography import x509

        cert = x509.load_der_x509_certificate(value)
        issuer = cert.issuer.rfc4514_string().replace('"', '""')
        gser = f'{{ serialNumber {cert.serial_number}, issuer "{issuer}" }}'
        return f"({attr.split(';')[0]}:certificateExactMatch:={escape(gser)})"
    return f"({attr}={escape(value)})"


def _sizelimited(run: Callable[[], Any]) -> Any:
    """A search that hits its size limit returned more than we can judge: ambiguous."""
    import ldap

    try:
        return run()
    except ldap.SIZELIMIT_EXCEEDED:
        raise _refuse(Code.USER_AMBIGUOUS, "The certificate matches several directory "
                      "entries; ask an administrator to fix the mapping.") from None


def _values(attrs: dict[str, list[bytes]], attr: str) -> list[bytes]:
    want = attr.lower()
    for k, v in attrs.items():
        if k.lower() == want or k.lower().split(";")[0] == want.split(";")[0]:
            return list(v)
    return []


def _first(attrs: dict[str, list[bytes]], attr: str) -> str | None:
    got = _values(attrs, attr)
    return got[0].decode("utf-8", "replace") if got else None


def test_lookup(ctx: Any, directory_id: str, certificate: bytes) -> dict[str, Any]:
    """``broker admin directories test-lookup``: map a certificate (PEM or DER) as a login
    would — no chain check, no cache — and say the user, rule and entry DN, or raise the
    refusal (user_not_found, account_disabled, directory_unavailable, …)."""
    from cryptography import x509

    from broker.pki.identity import identity_of
    from broker.service.admin import get_directory_row
    from broker.service.trust import map_user

    try:
        cert = (x509.load_pem_x509_certificate(certificate) if b"-----BEGIN" in certificate
                else x509.load_der_x509_certificate(certificate))
    except ValueError:
        raise ServiceError(Code.CERTIFICATE_MALFORMED, "That is not a certificate (PEM or "
                           "DER).") from None
    from cryptography.hazmat.primitives import serialization

    der = cert.public_bytes(serialization.Encoding.DER)
    ident = identity_of(cert)

    def read(session: Any) -> tuple[LdapSettings | None, list[str]]:
        d = get_directory_row(session, directory_id)
        return settings_of(d), list(d.certmap or ["upn", "email"])

    settings, rules = ctx.db.transaction(read)
    if settings is None:
        def local(session: Any) -> dict[str, Any]:
            user = map_user(session.connection(), directory_id, ident, rules)
            return {"user": user.username, "rule": None, "dn": None, "source": "local"}

        return dict(ctx.db.transaction(local))
    values = {r: rule_values(r, ident, der) for r in rules}
    found = ctx.ldap._lookup(settings, values, rules)
    return {**found.as_dict(), "source": "ldap", "filter_rules": rules}


def browse_users(ctx: Any, directory_id: str, search: str = "") -> dict[str, Any] | None:
    """The console's users page for an LDAP-backed directory (None: its users are local)."""
    from broker.service.admin import get_directory_row

    settings = ctx.db.transaction(lambda session: settings_of(
        get_directory_row(session, directory_id)))
    if settings is None:
        return None
    found: dict[str, Any] = ctx.ldap.browse(settings, search)
    return {**found, "name_attribute": settings.user_name_attribute}
