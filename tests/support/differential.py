"""A second opinion on every path the broker accepts: cryptography's Rust verifier
(``ClientVerifier``, strict RFC 5280 / CA/B profile) on the same inputs — leaf, the untrusted
pool, the anchors, the validation time, the depth limit.

When cryptography refuses a path the broker accepts, that is a failure unless its refusal is
listed here with the RFC section that makes the broker right. Refusals in the other direction
(cryptography accepts, the broker refuses) are the broker's stricter profile and revocation
checks and are not reported.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from broker.pki.native import VerificationError, native_chain

# cryptography's refusal (a regular expression on its message) → why the broker is right.
LISTED: list[tuple[str, str]] = [
    (r"unsupported directoryName constraint",
     "RFC 5280 §4.2.1.10 defines directoryName constraints (§7.1 matching); the broker "
     "processes them (OpenSSL and the RFC 5280 engine), cryptography does not support them"),
    (r"unsupported name constraint",
     "RFC 5280 §4.2.1.10: uniformResourceIdentifier constraints are defined, and a constraint "
     "on a name form (e.g. an otherName type) the certificate does not carry does not apply; "
     "cryptography refuses every path under such a constraint"),
    (r"validity dates between 1950 and 2049 must be UtcTime",
     "RFC 5280 §6.1.3 (a)(2) judges the validity period, not its encoding; the §4.1.2.5 "
     "encoding rule binds issuing CAs (PKITS 4.2.4 expects the path valid)"),
    (r"all candidates exhausted with no interior errors",
     "RFC 5280 §7.1: names are compared case-insensitively with whitespace folded, across "
     "PrintableString and UTF8String (PKITS 4.3.3-4.3.5, 4.3.9-4.3.11); cryptography requires "
     "byte-equal names to chain"),
    (r"signature does not match",
     "RFC 5280 §6.1: a self-issued certificate (key rollover, same name) is part of the path "
     "and not counted by pathLenConstraint (§6.1.4 (l)); cryptography's builder does not "
     "chain across it (PKITS 4.5.x, 4.6.15/17)"),
    (r"2\.5\.29\.(33|36|54): certificate contains unaccounted-for critical extensions",
     "RFC 5280 §4.2.1.5, §4.2.1.11, §4.2.1.14: policyMappings, policyConstraints and "
     "inhibitAnyPolicy are processed by the broker's RFC 5280 engine (§6.1.4); cryptography "
     "processes no policies"),
    (r"2\.5\.29\.15: Certificate is missing required extension",
     "RFC 5280 §6.1.4 (n) and §6.3.3 (f) check keyCertSign/cRLSign only when keyUsage is "
     "present; the broker accepts a CA without keyUsage (the §4.2.1.3 MUST is shown as an "
     "upload warning)"),
    (r"2\.5\.29\.19: Certificate extension has incorrect criticality",
     "RFC 5280 §6.1.4 (k) checks the cA flag only; a directory with "
     "accept_noncritical_constraints on relaxes the §4.2.1.9 criticality MUST on purpose, with "
     "a warning in the decision's evidence"),
    (r"basicConstraints.cA must not be asserted in an EE certificate",
     "RFC 5280 §6.1 validates any target certificate; with purpose \"any\" a CA certificate "
     "may be the target (the broker refuses it for purpose client-auth)"),
]


@dataclass(frozen=True)
class Disagreement:
    message: str
    listed: str | None

    @property
    def unexplained(self) -> bool:
        return self.listed is None


def _refusal(leaf: x509.Certificate, untrusted: Sequence[x509.Certificate],
             anchors: Sequence[x509.Certificate], at: dt.datetime, max_depth: int) -> str | None:
    try:
        native_chain(leaf, untrusted, anchors, at, max_depth)
        return None
    except VerificationError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - an input cryptography cannot take is a refusal
        return f"{type(exc).__name__}: {exc}"


def second_opinion(leaf: x509.Certificate, untrusted: Sequence[x509.Certificate],
                   anchors: Sequence[x509.Certificate], at: dt.datetime, max_depth: int,
                   path: Sequence[x509.Certificate] = ()) -> Disagreement | None:
    """None when cryptography accepts the path too, else its refusal and why we differ.

    cryptography's builder follows a self-signed CA of the untrusted pool into itself until the
    depth limit ("exceeds max depth") instead of backtracking; then it is asked again with only
    the intermediates of ``path`` (the path the broker accepted, within the depth limit by the
    broker's count), and that answer decides."""
    message = _refusal(leaf, untrusted, anchors, at, max_depth)
    if message is not None and "exceeds max depth" in message and path:
        message = _refusal(leaf, list(path[1:-1]), anchors, at, max_depth)
    if message is None:
        return None
    why = next((why for pattern, why in LISTED if re.search(pattern, message)), None)
    return Disagreement(message[:300], why)
