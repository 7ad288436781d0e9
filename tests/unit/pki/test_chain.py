"""Path validation: every reason code, on realistic PIV-style PKIs (RSA and ECDSA)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.pki import PkiError, RevocationSettings, TrustStore, issue, verify_certificate

NOW = dt.datetime.now(dt.UTC)
NO_REV = RevocationSettings(crl=False)


@pytest.fixture(scope="module", params=["ec-p256", "rsa-2048"])
def pki(request):  # type: ignore[no-untyped-def]
    root = issue.make_root("Root CA", request.param)
    inter = issue.make_intermediate(root, "Issuing CA", request.param)
    return root, inter, request.param


def check(leaf, chain, anchors, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("revocation", NO_REV)
    return verify_certificate(leaf.cert_der(), [c.cert_der() for c in chain],
                              TrustStore([a.cert for a in anchors]), **kw)


def reason(leaf, chain, anchors, **kw) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(PkiError) as err:
        check(leaf, chain, anchors, **kw)
    return err.value.code


def test_valid_piv_certificate(pki) -> None:  # type: ignore[no-untyped-def]
    root, inter, kind = pki
    user = issue.make_user_cert(inter, "Alice", kind, upn="alice@corp.example",
                                fasc_n=bytes(25))
    r = check(user, [inter], [root])
    assert [c.subject for c in r.chain] == [user.cert.subject, inter.cert.subject,
                                            root.cert.subject]
    assert r.identity.upn == "alice@corp.example" and r.revocation_status == "not_checked"


def test_untrusted_root(pki) -> None:  # type: ignore[no-untyped-def]
    root, inter, kind = pki
    other = issue.make_root("Other Root")
    assert reason(issue.make_user_cert(inter, "A", kind), [inter], [other]) == \
        "certificate_untrusted"


def test_missing_intermediate_is_untrusted(pki) -> None:  # type: ignore[no-untyped-def]
    root, inter, kind = pki
    assert reason(issue.make_user_cert(inter, "A", kind), [], [root]) == "certificate_untrusted"


def test_expired_leaf(pki) -> None:  # type: ignore[no-untyped-def]
    root, inter, kind = pki
    user = issue.make_user_cert(inter, "A", kind, not_before=NOW - dt.timedelta(days=10),
                                not_after=NOW - dt.timedelta(days=1))
    assert reason(user, [inter], [root]) == "certificate_expired"


def test_not_yet_valid_leaf(pki) -> None:  # type: ignore[no-untyped-def]
    root, inter, kind = pki
    user = issue.make_user_cert(inter, "A", kind, not_before=NOW + dt.timedelta(days=1))
    assert reason(user, [inter], [root]) == "certificate_not_yet_valid"


def test_expired_intermediate() -> None:
    root = issue.make_root("Root")
    inter = issue.make_intermediate(root, "Old Issuing", not_before=NOW - dt.timedelta(days=30),
                                    not_after=NOW - dt.timedelta(days=1))
    user = issue.make_user_cert(inter, "A", not_before=NOW - dt.timedelta(days=20))
    assert reason(user, [inter], [root]) == "certificate_expired"


def test_validation_time_is_honoured() -> None:
    root = issue.make_root("Root")
    inter = issue.make_intermediate(root, "Issuing")
    user = issue.make_user_cert(inter, "A", not_before=NOW - dt.timedelta(days=1),
                                not_after=NOW + dt.timedelta(days=1))
    assert check(user, [inter], [root], at=NOW).chain
    assert reason(user, [inter], [root], at=NOW + dt.timedelta(days=3)) == "certificate_expired"


@pytest.mark.parametrize("eku", [("email-protection",), ("server-auth",)])
def test_wrong_eku_is_not_for_client_auth(pki, eku) -> None:  # type: ignore[no-untyped-def]
    root, inter, kind = pki
    user = issue.make_user_cert(inter, "A", kind, eku=eku)
    assert reason(user, [inter], [root]) == "certificate_not_for_client_auth"
    assert check(user, [inter], [root], purpose="any").chain  # "any" skips EKU


@pytest.mark.parametrize("eku", [("client-auth",), ("smart-card-logon",), ()])
def test_client_auth_or_smart_card_logon_or_no_eku_is_accepted(pki, eku) -> None:  # type: ignore[no-untyped-def]
    root, inter, kind = pki
    assert check(issue.make_user_cert(inter, "A", kind, eku=eku), [inter], [root]).chain


def test_key_without_digital_signature_cannot_log_in() -> None:
    root = issue.make_root("Root")
    inter = issue.make_intermediate(root, "Issuing")
    user = issue.make_user_cert(inter, "A", key_usage_digital_signature=False)
    assert reason(user, [inter], [root]) == "certificate_not_for_client_auth"


def test_path_length_violation_is_untrusted() -> None:
    root = issue.make_root("Root", path_length=0)
    inter = issue.make_intermediate(root, "Issuing")
    user = issue.make_user_cert(inter, "A")
    assert reason(user, [inter], [root]) == "certificate_untrusted"


def test_intermediate_path_length_zero_forbids_a_sub_ca() -> None:
    root = issue.make_root("Root")
    inter = issue.make_intermediate(root, "Issuing", path_length=0)
    sub = issue.make_intermediate(inter, "Sub", path_length=0)
    assert reason(issue.make_user_cert(sub, "A"), [sub, inter], [root]) == \
        "certificate_untrusted"


def test_name_constraints_violation_is_untrusted() -> None:
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DirectoryName(x509.Name([
            x509.NameAttribute(x509.oid.NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(x509.oid.NameOID.ORGANIZATION_NAME, "Permitted Org")]))],
        excluded_subtrees=None)
    root = issue.make_root("Root")
    inter = issue.make_intermediate(root, "Issuing", name_constraints=constraints)
    user = issue.make_user_cert(inter, "A")  # O=Example Agency: outside the permitted tree
    assert reason(user, [inter], [root]) == "certificate_untrusted"


def test_unknown_critical_extension_is_untrusted() -> None:
    root = issue.make_root("Root")
    inter = issue.make_intermediate(root, "Issuing")
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    user = issue.make_user_cert(inter, "A", extra_extensions=[(ext, True)])
    assert reason(user, [inter], [root]) == "certificate_untrusted"


def test_sha1_signed_certificate_is_weak() -> None:
    """cryptography no longer signs with SHA-1, so use a real SHA-1 certificate from the
    cryptography test vectors."""
    import os

    import cryptography_vectors

    from broker.pki.checks import weakness as _weakness

    path = os.path.join(os.path.dirname(cryptography_vectors.__file__), "x509",
                        "custom", "cp_user_notice_no_explicit_text.pem")
    cert = x509.load_pem_x509_certificate(open(path, "rb").read())
    assert cert.signature_hash_algorithm.name == "sha1"
    assert _weakness(cert, check_signature=True) == "a SHA1 signature"
    assert _weakness(cert, check_signature=False) is None  # a trust anchor's own signature


def test_rsa_1024_key_is_weak() -> None:
    root = issue.make_root("Root", "rsa-2048")
    inter = issue.make_intermediate(root, "Issuing", "rsa-2048")
    user = issue.make_user_cert(inter, "A", "rsa-1024")
    assert reason(user, [inter], [root]) == "certificate_weak_algorithm"


def test_max_depth_is_enforced() -> None:
    root = issue.make_root("Root")
    a = issue.make_intermediate(root, "A", path_length=3)
    b = issue.make_intermediate(a, "B", path_length=2)
    c = issue.make_intermediate(b, "C", path_length=1)
    user = issue.make_user_cert(c, "U")
    # Three intermediates between leaf and anchor: the leaf and anchor are not counted.
    assert check(user, [c, b, a], [root], max_depth=3).chain
    assert reason(user, [c, b, a], [root], max_depth=2) == "chain_too_long"


def test_max_depth_zero_allows_a_leaf_issued_by_the_anchor() -> None:
    root = issue.make_root("Root")
    user = issue.make_user_cert(root, "U")
    assert check(user, [], [root], max_depth=0).chain


def test_too_many_chain_certificates() -> None:
    root = issue.make_root("Root")
    inter = issue.make_intermediate(root, "Issuing")
    user = issue.make_user_cert(inter, "A")
    assert reason(user, [inter] * 11, [root]) == "chain_too_long"


def test_ca_certificate_cannot_log_in() -> None:
    root = issue.make_root("Root")
    inter = issue.make_intermediate(root, "Issuing")
    assert reason(inter, [], [root]) == "certificate_not_for_client_auth"


def test_revoked_leaf_and_revoked_intermediate_by_crl() -> None:
    root = issue.make_root("Root")
    inter = issue.make_intermediate(root, "Issuing")
    user = issue.make_user_cert(inter, "A")
    good_root_crl = issue.make_crl(root, [])
    store = TrustStore([root.cert], [inter.cert],
                       [issue.make_crl(inter, [user.cert.serial_number]), good_root_crl])
    with pytest.raises(PkiError) as err:
        verify_certificate(user.cert_der(), [], store)
    assert err.value.code == "certificate_revoked"
    revoked_inter = issue.make_crl(root, [inter.cert.serial_number])
    store = TrustStore([root.cert], [inter.cert], [issue.make_crl(inter, []), revoked_inter])
    with pytest.raises(PkiError) as err:
        verify_certificate(user.cert_der(), [], store)
    assert err.value.code == "certificate_revoked" and "Issuing" in err.value.message


def test_crl_of_a_stranger_does_not_count() -> None:
    root = issue.make_root("Root")
    inter = issue.make_intermediate(root, "Issuing")
    user = issue.make_user_cert(inter, "A")
    impostor = issue.make_intermediate(root, "Issuing")  # same name, other key
    forged = issue.make_crl(impostor, [])
    store = TrustStore([root.cert], [inter.cert], [forged, issue.make_crl(root, [])])
    with pytest.raises(PkiError) as err:
        verify_certificate(user.cert_der(), [], store,
                           revocation=RevocationSettings(crl=True, fail_mode="hard"),
                           fetch=lambda *a: (_ for _ in ()).throw(OSError("offline")))
    assert err.value.code == "certificate_revocation_unknown"


def test_stale_crl_soft_fails_and_hard_fails() -> None:
    root = issue.make_root("Root")
    inter = issue.make_intermediate(root, "Issuing")
    user = issue.make_user_cert(inter, "A")
    stale = issue.make_crl(inter, [], this_update=NOW - dt.timedelta(days=10),
                           next_update=NOW - dt.timedelta(days=3))
    store = TrustStore([root.cert], [inter.cert], [stale, issue.make_crl(root, [])])
    r = verify_certificate(user.cert_der(), [], store)
    assert r.revocation_status == "soft_fail" and r.soft_fail_reasons
    with pytest.raises(PkiError) as err:
        verify_certificate(user.cert_der(), [], store,
                           revocation=RevocationSettings(fail_mode="hard"))
    assert err.value.code == "certificate_revocation_unknown"


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes_are_malformed_never_a_crash(data: bytes) -> None:
    root = issue.make_root("Root")
    with pytest.raises(PkiError) as err:
        verify_certificate(data, [], TrustStore([root.cert]), revocation=NO_REV)
    assert err.value.code in ("certificate_malformed", "certificate_untrusted")


@pytest.mark.parametrize("cut", [1, 10, 100, -1, -10])
def test_truncated_der_is_malformed(cut: int) -> None:
    root = issue.make_root("Root")
    inter = issue.make_intermediate(root, "Issuing")
    der = issue.make_user_cert(inter, "A").cert_der()
    with pytest.raises(PkiError) as err:
        verify_certificate(der[:cut], [inter.cert_der()], TrustStore([root.cert]))
    assert err.value.code == "certificate_malformed"


def test_accepted_verdicts_are_cached_per_path_and_crl_set() -> None:
    root = issue.make_root("Root")
    inter = issue.make_intermediate(root, "Issuing")
    user = issue.make_user_cert(inter, "A")
    store = TrustStore([root.cert], [inter.cert],
                       [issue.make_crl(inter, []), issue.make_crl(root, [])])
    first = verify_certificate(user.cert_der(), [], store)
    again = verify_certificate(user.cert_der(), [], store)
    assert first is again and store.verdicts is not None and store.verdicts.hits == 1
    # New CRLs are new trust material: the revoked certificate is refused at once.
    store.crls[0] = issue.make_crl(inter, [user.cert.serial_number])
    with pytest.raises(PkiError) as err:
        verify_certificate(user.cert_der(), [], store)
    assert err.value.code == "certificate_revoked"


def test_evidence_names_the_crls_the_verdict_rests_on() -> None:
    import json

    root = issue.make_root("Root")
    inter = issue.make_intermediate(root, "Issuing")
    user = issue.make_user_cert(inter, "A")
    store = TrustStore([root.cert], [inter.cert],
                       [issue.make_crl(inter, []), issue.make_crl(root, [])])
    evidence = verify_certificate(user.cert_der(), [], store).evidence()
    json.dumps(evidence)  # plain JSON for the audit event
    checked = evidence["revocation"]["checked"]
    assert {c["crl_issuer"] for c in checked} == {inter.cert.subject.rfc4514_string(),
                                                 root.cert.subject.rfc4514_string()}
    assert all(c["crl_number"] == 1 and c["this_update"] and c["next_update"] for c in checked)


def test_a_revoked_cross_certificate_falls_back_to_another_path() -> None:
    """Two issuers for the same CA key: the first ranked is revoked, the second is not."""
    root = issue.make_root("Root")
    key = issue.new_key()
    old = issue.make_intermediate(root, "Issuing", key=key)
    new = issue.make_intermediate(root, "Issuing", key=key)
    user = issue.make_user_cert(old, "A")
    store = TrustStore([root.cert], [old.cert, new.cert],
                       [issue.make_crl(old, []), issue.make_crl(root, [old.cert.serial_number])])
    r = verify_certificate(user.cert_der(), [], store)
    assert r.chain[1].serial_number == new.cert.serial_number


def test_name_constraints_are_judged_on_each_candidate_path() -> None:
    """The same CA key certified twice: once with a constraint excluding the user, once not.
    The constrained path is refused and the other one is found."""
    root = issue.make_root("Root")
    key = issue.new_key()
    excluded = x509.NameConstraints(None, [x509.DirectoryName(
        x509.Name([x509.NameAttribute(x509.oid.NameOID.COUNTRY_NAME, "US")]))])
    constrained = issue.make_intermediate(root, "Issuing", key=key, name_constraints=excluded)
    plain = issue.make_intermediate(root, "Issuing", key=key)
    user = issue.make_user_cert(constrained, "A")
    r = verify_certificate(user.cert_der(), [constrained.cert_der(), plain.cert_der()],
                           TrustStore([root.cert]), revocation=NO_REV)
    assert r.chain[1].serial_number == plain.cert.serial_number
    with pytest.raises(PkiError) as err:
        verify_certificate(user.cert_der(), [constrained.cert_der()], TrustStore([root.cert]),
                           revocation=NO_REV)
    assert err.value.code == "certificate_untrusted"


def test_chain_in_any_order_with_the_root_inside() -> None:
    root = issue.make_root("Root")
    a = issue.make_intermediate(root, "A", path_length=1)
    b = issue.make_intermediate(a, "B")
    user = issue.make_user_cert(b, "U")
    r = verify_certificate(user.cert_der(), [root.cert_der(), a.cert_der(), b.cert_der()],
                           TrustStore([root.cert]), revocation=NO_REV)
    assert len(r.chain) == 4
