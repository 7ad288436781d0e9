"""The admin's view of a directory's users where they live in LDAP: look a certificate up as
a login would (``broker admin directories test-lookup``, the console's test page), and browse
the server's users (the console's users page)."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from broker.codes import Code
from broker.kinds import DEFAULT_CERTMAP, CertmapRule
from broker.pki.identity import identity_of
from broker.service.errors import ServiceError
from broker.service.ldapdir import LdapSettings, rule_values, settings_of
from broker.service.lookups import get_directory_row
from broker.service.trust import map_user


def test_lookup(ctx: Any, directory_id: str, certificate: bytes) -> dict[str, Any]:
    """``broker admin directories test-lookup``: map a certificate (PEM or DER) as a login
    would — no chain check, no cache — and say the user, rule and entry DN, or raise the
    refusal (user_not_found, account_disabled, directory_unavailable, …)."""
    try:
        cert = (x509.load_pem_x509_certificate(certificate) if b"-----BEGIN" in certificate
                else x509.load_der_x509_certificate(certificate))
    except ValueError:
        raise ServiceError(Code.CERTIFICATE_MALFORMED, "That is not a certificate (PEM or "
                           "DER).") from None
    der = cert.public_bytes(serialization.Encoding.DER)
    ident = identity_of(cert)

    def read(session: Any) -> tuple[LdapSettings | None, list[CertmapRule]]:
        d = get_directory_row(session, directory_id)
        return settings_of(d), [CertmapRule(r) for r in d.certmap or DEFAULT_CERTMAP]

    settings, rules = ctx.db.transaction(read)
    if settings is None:
        def local(session: Any) -> dict[str, Any]:
            user = map_user(session.connection(), directory_id, ident, rules)
            return {"user": user.username, "rule": user.rule, "dn": None, "source": "local"}

        return dict(ctx.db.transaction(local))
    values = {r: rule_values(r, ident, der) for r in rules}
    found = ctx.ldap._lookup(settings, values, rules)
    return {**found.as_dict(), "source": "ldap", "filter_rules": rules}


def browse_users(ctx: Any, directory_id: str, search: str = "") -> dict[str, Any] | None:
    """The console's users page for an LDAP-backed directory (None: its users are local)."""
    settings = ctx.db.transaction(lambda session: settings_of(
        get_directory_row(session, directory_id)))
    if settings is None:
        return None
    found: dict[str, Any] = ctx.ldap.browse(settings, search)
    return {**found, "name_attribute": settings.user_name_attribute}
