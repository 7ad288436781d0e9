"""An LDAP directory's settings: the ``ldap`` object of a directory row with the flavour's
defaults filled in, and what cannot work about it (shared/DESIGN.md §11)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from broker.kinds import CertmapRule, LdapFlavour

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


