"""Federal bridge: agency A's card validates for a directory that trusts only agency B's root,
through bridge cross-certificates whose policy mappings carry B's required policy to A's.

    B Root (anchor) ─cross→ Bridge CA ─cross→ A Root ─→ A Issuing ─→ card (A's policy)
    maps B-medium → Bridge-medium     maps Bridge-medium → A-medium
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import x509 as asn1_x509
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from broker.pki import PkiError, RevocationSettings, TrustStore, verify_certificate
from broker.pki.cli import pki
from broker.pki.policies import PolicyInputs

NOW = dt.datetime.now(dt.UTC)
B_MEDIUM = "2.16.840.1.101.3.2.1.3.13"   # id-fpki-common-authentication, in B's domain
BRIDGE_MEDIUM = "2.16.840.1.101.3.2.1.3.99"
A_MEDIUM = "2.16.840.1.101.3.2.1.48.77"
A_OTHER = "2.16.840.1.101.3.2.1.48.78"
CA_KU = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
EE_KU = x509.KeyUsage(True, False, False, False, False, False, False, False, False)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "U.S. Government"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _policies(*oids: str) -> x509.CertificatePolicies:
    return x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier(o), None)
                                     for o in oids])


def _mappings(*pairs: tuple[str, str]) -> x509.UnrecognizedExtension:
    der = asn1_x509.PolicyMappings([{"issuer_domain_policy": i, "subject_domain_policy": s}
                                    for i, s in pairs]).dump()
    return x509.UnrecognizedExtension(ExtensionOID.POLICY_MAPPINGS, der)


def _cert(subject: str, issuer: str, key: Any, signer: Any, *, ca: bool,
          exts: list[tuple[x509.ExtensionType, bool]]) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=90))
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                        False)
         .add_extension(x509.BasicConstraints(ca, None), True)
         .add_extension(CA_KU if ca else EE_KU, True))
    for ext, critical in exts:
        b = b.add_extension(ext, critical)
    return b.sign(signer, hashes.SHA256())


def federation(a_root_maps_to: str = A_MEDIUM, *,
               card_exts: list[tuple[x509.ExtensionType, bool]] | None = None,
               keys: dict[str, Any] | None = None) -> dict[str, x509.Certificate]:
    """Agency B's root, the bridge, agency A's CAs and a card; ``keys`` (when given) receives
    the private keys by the same short names ("u" is the card's), ``card_exts`` extends the
    card (a UPN for a login)."""
    keys = keys if keys is not None else {}
    keys.update({n: ec.generate_private_key(ec.SECP256R1())
                 for n in ("b", "bridge", "a", "ai", "u")})
    return {
        "b_root": _cert("Agency B Root CA", "Agency B Root CA", keys["b"], keys["b"], ca=True,
                        exts=[]),
        "bridge_by_b": _cert("Federal Bridge CA", "Agency B Root CA", keys["bridge"], keys["b"],
                             ca=True, exts=[(_policies(B_MEDIUM), False),
                                            (_mappings((B_MEDIUM, BRIDGE_MEDIUM)), True)]),
        "a_by_bridge": _cert("Agency A Root CA", "Federal Bridge CA", keys["a"], keys["bridge"],
                             ca=True, exts=[(_policies(BRIDGE_MEDIUM), False),
                                            (_mappings((BRIDGE_MEDIUM, a_root_maps_to)), True)]),
        "a_root": _cert("Agency A Root CA", "Agency A Root CA", keys["a"], keys["a"], ca=True,
                        exts=[]),
        "a_issuing": _cert("Agency A PIV Issuing CA", "Agency A Root CA", keys["ai"], keys["a"],
                           ca=True, exts=[(_policies(A_MEDIUM, A_OTHER), False)]),
        "card": _cert("Alice Agency-A", "Agency A PIV Issuing CA", keys["u"], keys["ai"],
                      ca=False, exts=[(_policies(A_MEDIUM), False), *(card_exts or [])]),
    }


NO_REV = RevocationSettings(crl=False)


def check(f: dict[str, x509.Certificate], policy: PolicyInputs) -> Any:
    # The card hands over its chain in the "wrong" order, with A's self-signed root too.
    chain = [f["a_root"], f["a_by_bridge"], f["bridge_by_b"], f["a_issuing"]]
    return verify_certificate(f["card"], chain, TrustStore([f["b_root"]]), purpose="any",
                              revocation=NO_REV, policy=policy)


def test_card_of_agency_a_validates_for_agency_b_through_the_bridge() -> None:
    f = federation()
    r = check(f, PolicyInputs.of([B_MEDIUM]))
    assert [c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value for c in r.chain] == [
        "Alice Agency-A", "Agency A PIV Issuing CA", "Agency A Root CA", "Federal Bridge CA",
        "Agency B Root CA"]
    assert B_MEDIUM in r.policies


def test_card_fails_when_the_bridge_does_not_map_the_required_policy() -> None:
    f = federation(a_root_maps_to=A_OTHER)  # the card asserts A_MEDIUM, not what B's maps to
    with pytest.raises(PkiError) as err:
        check(f, PolicyInputs.of([B_MEDIUM]))
    assert err.value.code == "certificate_policy_mismatch"


def test_policy_mapping_inhibited_refuses_the_bridge_path() -> None:
    with pytest.raises(PkiError) as err:
        check(federation(), PolicyInputs.of([B_MEDIUM], mapping_inhibit=True))
    assert err.value.code == "certificate_policy_mismatch"


def test_a_policy_b_does_not_require_is_not_enough() -> None:
    with pytest.raises(PkiError) as err:
        check(federation(), PolicyInputs.of(["2.16.840.1.101.3.2.1.3.7"]))
    assert err.value.code == "certificate_policy_mismatch"


def test_bridge_through_broker_pki_verify(tmp_path: Path) -> None:
    f = federation()
    pem = {n: c.public_bytes(serialization.Encoding.PEM) for n, c in f.items()}
    (tmp_path / "card.pem").write_bytes(pem["card"])
    (tmp_path / "anchor.pem").write_bytes(pem["b_root"])
    (tmp_path / "pool.pem").write_bytes(pem["a_by_bridge"] + pem["a_issuing"] + pem["a_root"]
                                        + pem["bridge_by_b"])
    base = ["verify", str(tmp_path / "card.pem"), "--trust", str(tmp_path / "anchor.pem"),
            "--untrusted", str(tmp_path / "pool.pem"), "--purpose", "any", "--json"]
    ok = CliRunner().invoke(pki, [*base, "--policy", B_MEDIUM])
    assert ok.exit_code == 0, ok.output
    assert B_MEDIUM in json.loads(ok.output)["policies"]
    bad = CliRunner().invoke(pki, [*base, "--policy", B_MEDIUM, "--inhibit-policy-mapping"])
    assert bad.exit_code == 1
    assert json.loads(bad.output)["reason"] == "certificate_policy_mismatch"
