"""Issue 13: every class of RFC 5280 violation the issue lists is refused through a real login
(the broker over TLS, the card's chain and CRLs as a user meets them), with its reason code and
the profile check named in the audit view; each family has a positive control that logs in.

The same classes are refused through `broker pki verify` in tests/unit/pki/test_profile.py.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from broker.pki import issue
from tests.integration.admin.conftest import make_token
from tests.support import nonconforming as nc
from tests.support.httpfiles import file_server
from tests.support.softcard import SoftCard, SoftClient

UPN = "alice@corp.example"


@pytest.fixture
def crl_server() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A loopback CRL distribution point: path → DER CRL."""
    with file_server() as (base, files, _hits):
        yield base, files


def login(broker, world, card_leaf: issue.Issued, *chain: issue.Issued):  # type: ignore[no-untyped-def]
    client = SoftClient(broker.client(), world.codes["corp"])
    return client.login(SoftCard(card_leaf.key, card_leaf.cert, [c.cert for c in chain]))


def refused_checks(broker) -> list[str | None]:  # type: ignore[no-untyped-def]
    """The profile check of every refused login, oldest first, from the admin API's audit view."""
    api = broker.admin(make_token(broker, f"audit-{id(object())}", "read"))
    r = api.get("/admin/v1/audit-events?kind=login.smart_card&limit=500")
    assert r.status == 200, r.body
    events = sorted((e for e in r.body["items"] if e["outcome"] == "refused"),
                    key=lambda e: e["id"])
    return [e["details"].get("verification", {}).get("check") for e in events]


def expect_refusals(broker, world, cases) -> None:  # type: ignore[no-untyped-def]
    """Each (name, check, leaf, chain) login is refused as certificate_malformed with ``check``
    in the HTTP answer and in the audit event."""
    wrong = []
    for name, check, card_leaf, chain in cases:
        r = login(broker, world, card_leaf, *chain)
        got = (r.status, r.code, r.body.get("error", {}).get("details", {}).get("check")
               if isinstance(r.body, dict) else None)
        if got != (401, "certificate_malformed", check):
            wrong.append((name, got))
    assert wrong == []
    assert refused_checks(broker)[-len(cases):] == [check for _, check, *_ in cases]


def test_crl_profile_violations_refuse_logins(broker, world, crl_server) -> None:  # type: ignore[no-untyped-def]
    """CRLs fetched from the card's distribution point: no cRLNumber, a critical cRLNumber, an
    issuer whose keyUsage lacks cRLSign. Control: a conforming CRL, and an issuer with no
    keyUsage-restriction on cRLSign."""
    base, files = crl_server
    root = world.pki["root"]
    good_ca = nc.intermediate(root, "Corp CRL Test CA")
    no_sign_ca = nc.intermediate(root, "Corp No cRLSign CA", ku=nc.CERT_SIGN_ONLY_KU)
    files["/good.crl"] = nc.crl(good_ca).public_bytes(serialization.Encoding.DER)
    files["/missing.crl"] = nc.crl(good_ca, number=None).public_bytes(serialization.Encoding.DER)
    files["/critical.crl"] = nc.crl(good_ca, number_critical=True).public_bytes(
        serialization.Encoding.DER)
    files["/nosign.crl"] = nc.crl(no_sign_ca).public_bytes(serialization.Encoding.DER)

    ok = login(broker, world, nc.leaf(good_ca, crl_url=f"{base}/good.crl"), good_ca)
    assert ok.status == 200, ok.body
    expect_refusals(broker, world, [
        ("no cRLNumber", "crl_number_missing",
         nc.leaf(good_ca, crl_url=f"{base}/missing.crl"), [good_ca]),
        ("critical cRLNumber", "crl_number_critical",
         nc.leaf(good_ca, crl_url=f"{base}/critical.crl"), [good_ca]),
        ("issuer without cRLSign", "crl_issuer_without_crl_sign",
         nc.leaf(no_sign_ca, crl_url=f"{base}/nosign.crl"), [no_sign_ca]),
    ])


def test_bad_serial_numbers_refuse_logins(broker, world) -> None:  # type: ignore[no-untyped-def]
    inter = world.pki["issuing"]
    twenty = nc.with_serial(nc.leaf(inter), inter, (1 << 151) + 7)  # 20 octets: allowed
    assert login(broker, world, twenty, inter).status == 200
    expect_refusals(broker, world, [
        ("serial zero", "serial_not_positive", nc.with_serial(nc.leaf(inter), inter, 0), [inter]),
        ("negative serial", "serial_not_positive", nc.with_serial(nc.leaf(inter), inter, -5),
         [inter]),
        ("21-octet serial", "serial_too_long", nc.with_serial(nc.leaf(inter), inter, 1 << 160),
         [inter]),
    ])


def test_constraint_extension_violations_refuse_logins(broker, world) -> None:  # type: ignore[no-untyped-def]
    """CA basicConstraints, nameConstraints and policyConstraints not critical (in an
    intermediate the card presents), nameConstraints in an end-entity certificate."""
    root = world.pki["root"]
    constraints = x509.NameConstraints([x509.DNSName("corp.example")], None)
    policy = x509.PolicyConstraints(require_explicit_policy=None, inhibit_policy_mapping=0)
    good = nc.intermediate(root, "Corp Critical CA", [
        (x509.BasicConstraints(True, 0), True), (constraints, True), (policy, True)])
    assert login(broker, world, nc.leaf(good), good).status == 200

    bc = nc.intermediate(root, "Corp BC CA", [(x509.BasicConstraints(True, 0), False)])
    ncc = nc.intermediate(root, "Corp NC CA", [(x509.BasicConstraints(True, 0), True),
                                               (constraints, False)])
    pcc = nc.intermediate(root, "Corp PC CA", [(x509.BasicConstraints(True, 0), True),
                                               (policy, False)])
    expect_refusals(broker, world, [
        ("CA basicConstraints not critical", "ca_basic_constraints_not_critical",
         nc.leaf(bc), [bc]),
        ("nameConstraints not critical", "name_constraints_not_critical", nc.leaf(ncc), [ncc]),
        ("policyConstraints not critical", "policy_constraints_not_critical", nc.leaf(pcc),
         [pcc]),
        ("nameConstraints in an end entity", "name_constraints_in_end_entity",
         nc.leaf(good, extra=[(constraints, True)]), [good]),
    ])


def test_name_violations_refuse_logins(broker, world) -> None:  # type: ignore[no-untyped-def]
    """An empty subject with a non-critical subjectAltName; malformed DNS names, e-mail
    addresses and IP entries in subjectAltName and in name constraints."""
    inter, root = world.pki["issuing"], world.pki["root"]
    assert login(broker, world, nc.leaf(inter, subject=x509.Name([]), san_critical=True),
                 inter).status == 200
    assert login(broker, world, nc.leaf(inter, names=[x509.DNSName("*.corp.example")]),
                 inter).status == 200
    ip_ca = nc.intermediate(root, "Corp IP CA", [
        (x509.BasicConstraints(True, 0), True),
        (x509.NameConstraints([x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))], None),
         True)])
    assert login(broker, world, nc.leaf(ip_ca), ip_ca).status == 200

    def constrained(cn: str, base: x509.GeneralName | None) -> issue.Issued:
        ext = (x509.NameConstraints([base], None) if base is not None
               else nc.BAD_IP_NAME_CONSTRAINT)
        return nc.intermediate(root, cn, [(x509.BasicConstraints(True, 0), True), (ext, True)])

    bad_email = x509.RFC822Name._init_without_validation("a@b@corp.example")
    cases = [("empty subject, SAN not critical", "empty_subject_san_not_critical",
              nc.leaf(inter, subject=x509.Name([])), [inter])]
    for dns in (".corp.example", "under_score.corp.example", "www.*.corp.example",
                "*www.corp.example"):
        cases.append((f"SAN dNSName {dns}", "malformed_dns_name",
                      nc.leaf(inter, names=[x509.DNSName(dns)]), [inter]))
    cases.append(("SAN rfc822Name a@b@…", "malformed_email", nc.leaf(inter, names=[bad_email]),
                  [inter]))
    cases.append(("SAN iPAddress of 3 octets", "malformed_ip_address",
                  nc.leaf(inter, san=nc.BAD_IP_SAN), [inter]))
    for cn, base, check in (("Corp NC DNS CA", x509.DNSName("under_score.example"),
                             "malformed_dns_name"),
                            ("Corp NC Dot CA", x509.DNSName("bad-.example"),
                             "malformed_dns_name"),
                            ("Corp NC Mail CA", bad_email, "malformed_email"),
                            ("Corp NC IP CA", None, "malformed_ip_address")):
        ca = constrained(cn, base)
        cases.append((f"name constraint in {cn}", check, nc.leaf(ca), [ca]))
    expect_refusals(broker, world, cases)


def test_issue_27_classes_refuse_logins(broker, world) -> None:  # type: ignore[no-untyped-def]
    """Issue 27 through a real login: a wildcard SAN under an excludedSubtrees entry it can
    stand for (Go CVE-2025-61727's class) is refused as certificate_untrusted with the check
    named; a critical subjectKeyIdentifier as certificate_malformed. Controls log in: the same
    constrained CA with a plain name, a wildcard that cannot reach the excluded subtree."""
    root, inter = world.pki["root"], world.pki["issuing"]
    excluded = x509.NameConstraints(None, [x509.DNSName("test.corp.example")])
    ca = nc.intermediate(root, "Corp Excluded CA", [(x509.BasicConstraints(True, 0), True),
                                                    (excluded, True)])
    assert login(broker, world, nc.leaf(ca, names=[x509.DNSName("www.corp.example")]),
                 ca).status == 200
    assert login(broker, world, nc.leaf(ca, names=[x509.DNSName("*.other.example")]),
                 ca).status == 200
    r = login(broker, world, nc.leaf(ca, names=[x509.DNSName("*.corp.example")]), ca)
    assert (r.status, r.code) == (401, "certificate_untrusted"), r.body
    assert r.body["error"]["details"]["check"] == "name_constraints_excluded_wildcard"
    assert refused_checks(broker)[-1] == "name_constraints_excluded_wildcard"
    ski = x509.SubjectKeyIdentifier(bytes(range(20)))
    expect_refusals(broker, world, [
        ("critical subjectKeyIdentifier", "subject_key_identifier_critical",
         nc.leaf(inter, extra=[(ski, True)]), [inter]),
    ])
    assert login(broker, world, nc.leaf(inter, extra=[(ski, False)]), inter).status == 200
