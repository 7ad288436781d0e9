"""Identity extraction, certmap rules, and challenge signature checks."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from hypothesis import given
from hypothesis import strategies as st

from broker.pki import PkiError, issue
from broker.pki.identity import UserRecord, fasc_n_digits, identity_of, map_certificate
from broker.pki.signatures import SUPPORTED_SIGNATURE_ALGORITHMS, verify_signature

ROOT = issue.make_root("Root")
INTER = issue.make_intermediate(ROOT, "Issuing")
# FASC-N from the TIG SCEPACS example: agency 0032, system 0001, credential 092446, CS 0, ICI 1,
# PI 1112223333, OC 1, OI 1223, POA 2.
FASC_N = bytes.fromhex("d0439458210c2c19a0846d83685a1082108ce73984108ca3fc")


def test_identity_has_upn_email_fasc_n_uuid_and_fingerprint() -> None:
    u = issue.make_user_cert(INTER, "Alice", upn="alice@corp.example",
                             email="Alice@Corp.Example", fasc_n=FASC_N,
                             card_uuid="1b4e28ba-2fa1-11d2-883f-0016d3cca427")
    ident = identity_of(u.cert)
    assert ident.upn == "alice@corp.example"
    assert ident.emails == ("Alice@Corp.Example",)
    assert ident.fasc_n == FASC_N.hex()
    assert ident.card_uuid == "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    assert len(ident.fingerprint) == 64 and ident.subject.startswith("CN=Alice")


def test_fasc_n_decodes_to_its_digits() -> None:
    digits = fasc_n_digits(FASC_N.hex())
    # S = start sentinel, F = field separator, E = end sentinel, then the LRC digit.
    assert digits == "S0032F0001F092446F0F1F1112223333112232E7"
    assert fasc_n_digits("00" * 25) is None  # parity errors
    assert fasc_n_digits("zz") is None


USERS = [UserRecord("alice", upn="alice@corp.example", email="alice@corp.example"),
         UserRecord("bob", upn="bob@corp.example", email="shared@corp.example"),
         UserRecord("bob2", upn=None, email="shared@corp.example"),
         UserRecord("carol", subject="CN=Carol,O=Example Agency,C=US")]


def ident(**kw):  # type: ignore[no-untyped-def]
    return identity_of(issue.make_user_cert(INTER, kw.pop("cn", "X"), **kw).cert)


def test_upn_maps_case_insensitively() -> None:
    assert map_certificate(ident(upn="ALICE@corp.example"), ["upn"], USERS).username == "alice"


def test_rules_are_tried_in_order() -> None:
    i = ident(upn="nobody@x", email="alice@corp.example")
    assert map_certificate(i, ["upn", "email"], USERS).username == "alice"
    with pytest.raises(PkiError) as err:
        map_certificate(i, ["upn"], USERS)
    assert err.value.code == "user_not_found"


def test_ambiguous_mapping_is_refused() -> None:
    with pytest.raises(PkiError) as err:
        map_certificate(ident(email="shared@corp.example"), ["email"], USERS)
    assert err.value.code == "user_ambiguous"


def test_subject_and_fingerprint_rules() -> None:
    i = ident(cn="Carol")
    assert map_certificate(i, ["upn", "subject"], USERS).username == "carol"
    users = [UserRecord("dan", fingerprint=i.fingerprint.upper())]
    assert map_certificate(i, ["fingerprint"], users).username == "dan"


@pytest.mark.parametrize("kind,alg", [
    ("ec-p256", "ecdsa-sha256"), ("ec-p384", "ecdsa-sha384"), ("ec-p256", "ecdsa-sha384"),
    ("rsa-2048", "rsa-pkcs1-sha256"), ("rsa-2048", "rsa-pkcs1-sha384"),
    ("rsa-2048", "rsa-pss-sha256"), ("rsa-3072", "rsa-pss-sha384")])
def test_every_supported_algorithm_verifies(kind: str, alg: str) -> None:
    key = issue.new_key(kind)
    data = b"to be signed"
    digest = hashes.SHA384() if alg.endswith("384") else hashes.SHA256()
    if alg.startswith("ecdsa"):
        sig = key.sign(data, ec.ECDSA(digest))
    elif alg.startswith("rsa-pss"):
        sig = key.sign(data, padding.PSS(padding.MGF1(digest), digest.digest_size), digest)
    else:
        sig = key.sign(data, padding.PKCS1v15(), digest)
    verify_signature(key.public_key(), data, sig, alg)
    with pytest.raises(PkiError) as err:
        verify_signature(key.public_key(), data + b"!", sig, alg)
    assert err.value.code == "signature_invalid"


@pytest.mark.parametrize("kind,signed_as,claimed", [
    ("ec-p256", "ecdsa-sha256", "rsa-pkcs1-sha256"),
    ("rsa-2048", "rsa-pkcs1-sha256", "ecdsa-sha256"),
    ("rsa-2048", "rsa-pkcs1-sha256", "rsa-pss-sha256"),
    ("ec-p256", "ecdsa-sha1", "ecdsa-sha1"),
    ("ec-p256", "ecdsa-sha256", "none"),
])
def test_algorithm_must_fit_the_key(kind: str, signed_as: str, claimed: str) -> None:
    """A signature that is genuinely valid, presented under the wrong (or a weak) algorithm
    name, is refused: the check is on the name, not only on the bytes."""
    key = issue.new_key(kind)
    data = b"to be signed"
    digest = hashes.SHA1() if signed_as.endswith("sha1") else hashes.SHA256()
    if signed_as.startswith("ecdsa"):
        sig = key.sign(data, ec.ECDSA(digest))
    else:
        sig = key.sign(data, padding.PKCS1v15(), digest)
    if claimed == signed_as and not claimed.endswith("sha1"):
        raise AssertionError("each case must be refusable")
    with pytest.raises(PkiError) as err:
        verify_signature(key.public_key(), data, sig, claimed)
    assert err.value.code == "signature_invalid"


def test_the_same_signatures_verify_under_their_right_names() -> None:
    """Positive control for the test above."""
    for kind, alg in (("ec-p256", "ecdsa-sha256"), ("rsa-2048", "rsa-pkcs1-sha256")):
        key = issue.new_key(kind)
        sig = (key.sign(b"to be signed", ec.ECDSA(hashes.SHA256())) if alg.startswith("ecdsa")
               else key.sign(b"to be signed", padding.PKCS1v15(), hashes.SHA256()))
        verify_signature(key.public_key(), b"to be signed", sig, alg)


@given(st.binary(max_size=600), st.sampled_from(SUPPORTED_SIGNATURE_ALGORITHMS))
def test_garbage_signatures_never_crash(sig: bytes, alg: str) -> None:
    key = issue.new_key("ec-p256")
    with pytest.raises(PkiError):
        verify_signature(key.public_key(), b"data", sig, alg)
