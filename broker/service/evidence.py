"""What a login decision rests on, read from its audit event: the certificate's subject and UPN
and the certmap rule that decided (or the rules tried), for the audit list of the API, the CLI
and the console alike (declared as output fields of the audit-events resource).

The audit details carry them as the login wrote them: ``certificate`` {subject, upn, emails}
(refusals since issue 29, successes too), ``certmap_rule`` (the deciding rule, or the list of
rules tried when none matched), and for LDAP-backed directories ``ldap.rule`` (a success) or
``rule`` (a refusal). Older events without them show nothing, never a guess.
"""

from __future__ import annotations

from typing import Any


def _details(row: Any) -> dict[str, Any]:
    details = getattr(row, "details", None)
    return details if isinstance(details, dict) else {}


def _certificate(row: Any) -> dict[str, Any]:
    cert = _details(row).get("certificate")
    return cert if isinstance(cert, dict) else {}


def subject_of(row: Any, ctx: Any = None) -> str | None:
    """The certificate's subject (RFC 4514) of a login decision, or None."""
    value = _certificate(row).get("subject")
    return value if isinstance(value, str) and value else None


def upn_of(row: Any, ctx: Any = None) -> str | None:
    """The UPN in the certificate's subjectAltName, or None."""
    value = _certificate(row).get("upn")
    return value if isinstance(value, str) and value else None


def certmap_rule_of(row: Any, ctx: Any = None) -> str | None:
    """The certmap rule that decided (several, comma-joined, when none matched)."""
    details = _details(row)
    ldap = details.get("ldap")
    for value in (details.get("certmap_rule"),
                  ldap.get("rule") if isinstance(ldap, dict) else None,
                  details.get("rule"), details.get("rules")):
        if isinstance(value, str) and value:
            return value
        if isinstance(value, list | tuple) and value:
            return ", ".join(str(v) for v in value)
    return None
