"""Issue 27's path classes, each a small PKI built with cryptography's builders.

Four invalid classes (each must be refused with its reason code and ``details.check``) and two
valid ones (each must be accepted), with a conforming control beside each. Shared by the unit
tests (tests/unit/pki/test_rfc5280_gaps.py), the differential test against cryptography's
verifier and the login test.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

Ext = tuple[x509.ExtensionType, bool]
CA_KU = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
EE_KU = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
OTHER_NAME_OID = ObjectIdentifier("1.3.6.1.4.1.99999.7.1")  # some otherName type no card carries


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def cert(subject: x509.Name, issuer: x509.Name, public: Any, signer: Any, exts: list[Ext], *,
         ski: bool | None = False, aki: bool = True) -> x509.Certificate:
    """A certificate; ``ski`` None leaves out the subjectKeyIdentifier, True marks it critical;
    ``aki`` False leaves out the authorityKeyIdentifier."""
    now = _now()
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(public.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(days=1))
         .not_valid_after(now + dt.timedelta(days=60)))
    if ski is not None:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(public.public_key()), ski)
    if aki:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            signer.public_key()), False)
    for ext, critical in exts:
        b = b.add_extension(ext, critical)
    return b.sign(signer, hashes.SHA256())


def ca_exts(path_len: int | None = None, extra: list[Ext] | None = None) -> list[Ext]:
    return [(x509.BasicConstraints(True, path_len), True), (CA_KU, True), *(extra or [])]


def leaf_exts(names: list[x509.GeneralName] | None = None) -> list[Ext]:
    out: list[Ext] = [(x509.BasicConstraints(False, None), True), (EE_KU, True),
                      (x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), False)]
    if names:
        out.append((x509.SubjectAlternativeName(names), False))
    return out


def upn(value: str) -> x509.OtherName:
    from asn1crypto.core import UTF8String

    return x509.OtherName(UPN_OID, UTF8String(value).dump())


@dataclass
class Case:
    """One path: ``leaf`` → ``chain`` (the card's intermediates) → ``anchors``.

    ``refusal`` is None for a path that must be accepted, else (reason code, details.check).
    """

    id: str
    leaf: x509.Certificate
    chain: list[x509.Certificate]
    anchors: list[x509.Certificate]
    refusal: tuple[str, str] | None
    max_depth: int = 6
    rfc: str = ""
    keys: dict[str, Any] = field(default_factory=dict)


def _root(cn: str) -> tuple[x509.Certificate, Any]:
    k = key()
    return cert(name(cn), name(cn), k, k, ca_exts()), k


def excluded_wildcard(wildcard: bool = True, excluded: str = "test.corp.example") -> Case:
    """excludedSubtrees dNSName ``excluded``; the leaf's SAN *.corp.example (which can stand
    for the excluded host test.corp.example: Go CVE-2025-61727) or, as the control,
    www.corp.example."""
    root, rk = _root("Gap NC Root")
    ik = key()
    nc = x509.NameConstraints(None, [x509.DNSName(excluded)])
    inter = cert(name("Gap NC Issuing"), root.subject, ik, rk, ca_exts(0, [(nc, True)]))
    lk = key()
    san = "*.corp.example" if wildcard else "www.corp.example"
    leaf = cert(name("Gap NC User"), inter.subject, lk, ik, leaf_exts([x509.DNSName(san)]))
    # A wildcard stands for one label: it cannot reach into a subtree two labels down.
    refused = wildcard and excluded != "deep.test.corp.example"
    return Case("excluded-dns-" + ("wildcard" if wildcard else "control")
                + ("" if excluded == "test.corp.example" else f"-{excluded}"), leaf, [inter],
                [root], ("certificate_untrusted", "name_constraints_excluded_wildcard")
                if refused else None, rfc="RFC 5280 §4.2.1.10; Go CVE-2025-61727")


def cross_without_aki(aki: bool = False, anchored: bool = False) -> Case:
    """Leaf → issuing CA → a cross-certificate of "Gap New Root" issued by "Gap Old Root" (a
    CA certificate that is not self-signed) without authorityKeyIdentifier. ``anchored``: the
    directory trusts the cross-certificate itself (it is the trust anchor of the path)."""
    old, ok = _root("Gap Old Root")
    nk = key()
    cross = cert(name("Gap New Root"), old.subject, nk, ok, ca_exts(), aki=aki)
    ik = key()
    inter = cert(name("Gap Cross Issuing"), cross.subject, ik, nk, ca_exts(0))
    lk = key()
    leaf = cert(name("Gap Cross User"), inter.subject, lk, ik, leaf_exts())
    cid = ("cross-root-anchor" if anchored else "cross-ca") + ("-with-aki" if aki
                                                                else "-without-aki")
    return Case(cid, leaf, [inter] if anchored else [inter, cross],
                [cross] if anchored else [old],
                ("certificate_malformed", "authority_key_identifier_missing") if not aki
                else None, rfc="RFC 5280 §4.2.1.1")


def critical_ski(where: str = "intermediate") -> Case:
    """A subjectKeyIdentifier marked critical in the intermediate, the leaf, the trust anchor,
    or (control) nowhere."""
    rk = key()
    root = cert(name("Gap SKI Root"), name("Gap SKI Root"), rk, rk, ca_exts(),
                ski=where == "anchor")
    ik = key()
    inter = cert(name("Gap SKI Issuing"), root.subject, ik, rk, ca_exts(0),
                 ski=where == "intermediate")
    lk = key()
    leaf = cert(name("Gap SKI User"), inter.subject, lk, ik, leaf_exts(), ski=where == "leaf")
    return Case(f"critical-ski-{where}", leaf, [inter], [root],
                ("certificate_malformed", "subject_key_identifier_critical")
                if where != "nowhere" else None, rfc="RFC 5280 §4.2.1.2")


def self_issued_rollover(max_depth: int = 1) -> Case:
    """Root → "Gap Rollover CA" (pathLen 0, old key) → "Gap Rollover CA" (new key, self-issued,
    signed by the old key) → leaf: one non-self-issued intermediate, so pathLenConstraint 0 and
    max_depth 1 allow it (RFC 5280 §6.1.4 (l)); max_depth 0 does not."""
    root, rk = _root("Gap Rollover Root")
    old_k, new_k = key(), key()
    ca_name = name("Gap Rollover CA")
    old = cert(ca_name, root.subject, old_k, rk, ca_exts(0))
    new = cert(ca_name, ca_name, new_k, old_k, ca_exts(0))
    lk = key()
    leaf = cert(name("Gap Rollover User"), ca_name, lk, new_k, leaf_exts())
    return Case(f"self-issued-not-counted-depth{max_depth}", leaf, [new, old], [root],
                None if max_depth >= 1 else ("chain_too_long", ""), max_depth=max_depth,
                rfc="RFC 5280 §6.1.4 (l)")


def other_name_constraint(carried: bool = False) -> Case:
    """permittedSubtrees holds an otherName of a type the leaf does not carry (the leaf has a
    UPN otherName and an e-mail): no constraint applies to the leaf's names (§4.2.1.10: "If a
    name of a type that is not in the constraint set is present, no constraint applies")."""
    root, rk = _root("Gap OtherName Root")
    ik = key()
    from asn1crypto.core import UTF8String

    # ``carried``: the constraint is on the UPN type the leaf carries; RFC 5280 defines no
    # matching rule for it, so the verifier cannot tell and refuses (as OpenSSL does).
    constraint = x509.OtherName(UPN_OID if carried else OTHER_NAME_OID,
                                UTF8String("corp.example").dump())
    nc = x509.NameConstraints([constraint, x509.RFC822Name("corp.example")], None)
    inter = cert(name("Gap OtherName Issuing"), root.subject, ik, rk, ca_exts(0, [(nc, True)]))
    lk = key()
    names: list[x509.GeneralName] = [upn("alice@corp.example"),
                                     x509.RFC822Name("alice@corp.example")]
    leaf = cert(name("Gap OtherName User"), inter.subject, lk, ik, leaf_exts(names))
    return Case("other-name-constraint-" + ("carried" if carried else "not-carried"), leaf,
                [inter], [root], ("certificate_untrusted", "") if carried else None,
                rfc="RFC 5280 §4.2.1.10")


CASES: dict[str, Callable[[], Case]] = {
    "excluded-dns-wildcard": excluded_wildcard,
    "excluded-dns-control": lambda: excluded_wildcard(False),
    "excluded-dns-wildcard-corp.example": lambda: excluded_wildcard(excluded="corp.example"),
    "excluded-dns-wildcard-deep.test.corp.example":
        lambda: excluded_wildcard(excluded="deep.test.corp.example"),
    "cross-ca-without-aki": cross_without_aki,
    "cross-ca-with-aki": lambda: cross_without_aki(True),
    "cross-root-anchor-without-aki": lambda: cross_without_aki(anchored=True),
    "cross-root-anchor-with-aki": lambda: cross_without_aki(True, anchored=True),
    "critical-ski-intermediate": critical_ski,
    "critical-ski-leaf": lambda: critical_ski("leaf"),
    "critical-ski-anchor": lambda: critical_ski("anchor"),
    "critical-ski-nowhere": lambda: critical_ski("nowhere"),
    "self-issued-not-counted-depth1": self_issued_rollover,
    "self-issued-not-counted-depth0": lambda: self_issued_rollover(0),
    "other-name-constraint-not-carried": other_name_constraint,
    "other-name-constraint-carried": lambda: other_name_constraint(True),
}
