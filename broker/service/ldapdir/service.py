"""Per process: the LDAP lookups of logins (cached), password binds, the console's paged
user list and ``broker doctor``'s check, with each directory's health."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from broker.codes import Code
from broker.service.errors import ServiceError
from broker.service.ldapdir.certmap import (
    LdapRefusal,
    LdapUser,
    _clause,
    _first,
    _refuse,
    _same,
    _sizelimited,
    _values,
    escape,
    rule_values,
)
from broker.service.ldapdir.pool import Deadline, _connect, _ldap_call, _Pool
from broker.service.ldapdir.settings import (
    _AD_EPOCH_OFFSET,
    _AD_NEVER,
    BROWSE_LIMIT,
    IN_CHAIN,
    NEGATIVE_TTL_S,
    UF_ACCOUNTDISABLE,
    LdapSettings,
)

# ------------------------------------------------------------------ the per-process service

#: Read with every entry a login finds: account state, groups, and what a login shows.
_STATE_ATTRIBUTES = ("userAccountControl", "accountExpires", "memberOf", "userPrincipalName",
                     "mail")


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
                base: str | None = None, scope: str = "subtree",
                deadline: Deadline | None = None) -> list[tuple[str, dict]]:
        """One search (two round trips at most: the retry on a dropped pooled connection),
        all of it within ``deadline`` (a new one of ``timeout_s`` when none is given)."""
        import ldap

        from broker import metrics

        limit = deadline or Deadline(s)

        def run() -> list[tuple[str, dict]]:
            with self.pool(s).connection(limit) as conn:
                with self._lock:
                    self.searches += 1
                got = conn.search_ext_s(
                    base or s.base_dn,
                    ldap.SCOPE_BASE if scope == "base" else ldap.SCOPE_SUBTREE, filt, attrs,
                    timeout=limit.left(), sizelimit=3 if scope != "base" else 1)
                return [(dn, a) for dn, a in got if dn is not None]

        def run_once_more() -> list[tuple[str, dict]]:
            try:
                return run()
            except ldap.SERVER_DOWN:
                # A pooled connection the server dropped (restart, idle timeout): once more
                # on a new connection, within what is left of the same deadline.
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
        core = f"(&{s.user_filter}(|{''.join(clauses)}))"
        wanted = sorted({*_STATE_ATTRIBUTES, s.user_name_attribute,
                         *[a.split(";")[0] for r in rules if (a := s.attribute(r))]})
        entries, in_groups = self._entitled(s, core, wanted, Deadline(s))
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
                return self._admit(s, rule, dn, attrs, in_groups)
        raise _refuse(Code.USER_NOT_FOUND, "No user of this directory matches the "
                      "certificate.", rules=list(rules))

    def _entitled(self, s: LdapSettings, core: str, attrs: list[str], deadline: Deadline
                  ) -> tuple[list[tuple[str, dict]], bool | None]:
        """The entries ``core`` finds, and whether they are in ``required_groups``.

        With AD and required groups, nested membership (LDAP_MATCHING_RULE_IN_CHAIN) is part
        of the one search, so a login that succeeds costs one round trip; only when nothing
        comes back does a second search without it tell "no such user" from "not in a
        required group" (True/False). Elsewhere None: the caller checks ``memberOf`` itself.
        So with AD an entry outside the groups is no candidate: a certificate that maps to
        one entry inside and one outside logs in the one inside."""
        if s.flavour != "ad" or not s.required_groups:
            return self._search(s, core, attrs, deadline=deadline), None
        groups = "".join(f"(memberOf:{IN_CHAIN}:={escape(g)})" for g in s.required_groups)
        found = self._search(s, f"(&{core}(|{groups}))", attrs, deadline=deadline)
        if found:
            return found, True
        return self._search(s, core, attrs, deadline=deadline), False

    def _admit(self, s: LdapSettings, rule: str, dn: str, attrs: dict[str, list[bytes]],
               in_groups: bool | None) -> LdapUser:
        """Account state and required groups of the entry a rule found (``in_groups``: what
        the search said about nested membership; None: judge by ``memberOf``)."""
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
            if in_groups is None:
                member_of = {v.decode("utf-8", "replace").lower()
                             for v in _values(attrs, "memberOf")}
                in_groups = bool(member_of & {g.lower() for g in s.required_groups})
            if not in_groups:
                raise _refuse(Code.NOT_IN_REQUIRED_GROUP, "This account is not in a group "
                              "this directory requires.", rule, dn,
                              groups=list(s.required_groups))
        return LdapUser(name, dn, rule, _first(attrs, "userPrincipalName"),
                        _first(attrs, "mail"))

    # ------------------------------------------------------------------ names and passwords

    def find_name(self, s: LdapSettings, username: str) -> str | None:
        """The DN of the user named ``username`` (user_name_attribute), or None."""
        filt = f"(&{s.user_filter}({s.user_name_attribute}={escape(username)}))"
        found = self._search(s, filt, ["1.1"])
        return found[0][0] if len(found) == 1 else None

    def password_login(self, s: LdapSettings, username: str, password: str) -> LdapUser | None:
        """Bind as the user (simple bind over TLS); the entry, or None for wrong credentials.
        The search and the bind share one deadline of ``timeout_s``."""
        import ldap

        if not password:
            return None  # an empty password is an anonymous bind, never a login
        deadline = Deadline(s)
        core = f"(&{s.user_filter}({s.user_name_attribute}={escape(username)}))"
        found, in_groups = self._entitled(
            s, core, sorted({*_STATE_ATTRIBUTES, s.user_name_attribute}), deadline)
        if len(found) != 1:
            return None
        dn, attrs = found[0]
        wait = deadline.left()

        def bind() -> bool:
            conn = _connect(s, wait)
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
        if not _ldap_call(s, lambda: self.pool(s).bounded(bind, deadline=deadline)):
            return None
        return self._admit(s, "password", dn, attrs, in_groups)

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

        bound = Deadline(s)

        def run() -> dict[str, Any]:
            with self.pool(s).connection(bound) as conn:
                with self._lock:
                    self.searches += 1
                paged = SimplePagedResultsControl(True, size=limit, cookie=b"")
                msgid = conn.search_ext(s.base_dn, ldap.SCOPE_SUBTREE, filt,
                                        [name, "mail"], serverctrls=[paged],
                                        timeout=bound.left())
                _, got, _, ctrls = conn.result3(msgid, timeout=bound.left())
                cookie = b""
                for c in ctrls or []:
                    if c.controlType == SimplePagedResultsControl.controlType:
                        cookie = c.cookie
                if cookie:  # release the server's paging state
                    done = SimplePagedResultsControl(True, size=0, cookie=cookie)
                    conn.result3(conn.search_ext(s.base_dn, ldap.SCOPE_SUBTREE, filt, ["1.1"],
                                                 serverctrls=[done], timeout=bound.left()),
                                 timeout=bound.left())
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


