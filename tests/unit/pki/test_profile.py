"""RFC 5280 profile MUSTs: each non-conforming certificate or CRL is refused through
`broker pki verify` with certificate_malformed and the check that names the rule.

Certificates are built with cryptography's builders; where the builder refuses to make the
violation (serial numbers, raw SAN/nameConstraints entries) the DER is patched and re-signed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import x509 as asn1_x509
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from broker.pki import profile
from broker.pki.cli import pki

NOW = dt.datetime.now(dt.UTC)
Ext = tuple[x509.ExtensionType, bool]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: x509.Name, issuer: x509.Name, key: Any, signer: Any, exts: list[Ext],
          serial: int = 0x1234_5678_9ABC) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(serial)
         .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=30))
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False))
    if signer is not key:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            signer.public_key()), False)
    for ext, critical in exts:
        b = b.add_extension(ext, critical)
    return b.sign(signer, hashes.SHA256())


CA_KU = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
EE_KU = x509.KeyUsage(True, False, False, False, False, False, False, False, False)


def _resign(cert: x509.Certificate, signer: Any, mutate: Callable[[Any], None]) -> x509.Certificate:
    """``cert`` with its TBS changed by ``mutate`` (asn1crypto) and signed again by ``signer``."""
    c = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    tbs = c["tbs_certificate"]
    mutate(tbs)
    tbs_der = tbs.dump(force=True)
    sig = signer.sign(tbs_der, ec.ECDSA(hashes.SHA256()))
    new = asn1_x509.Certificate({"tbs_certificate": asn1_x509.TbsCertificate.load(tbs_der),
                                 "signature_algorithm": c["signature_algorithm"],
                                 "signature_value": sig})
    return x509.load_der_x509_certificate(new.dump())


class Pki:
    """Root → Issuing CA → leaf, each knob a departure from RFC 5280."""

    def __init__(self, *, inter_exts: list[Ext] | None = None,
                 leaf_exts: list[Ext] | None = None, leaf_subject: x509.Name | None = None,
                 inter_ku: x509.KeyUsage | None = CA_KU) -> None:
        self.root_key, self.inter_key, self.leaf_key = _key(), _key(), _key()
        self.root = _cert(_name("Profile Root"), _name("Profile Root"), self.root_key,
                          self.root_key, [(x509.BasicConstraints(True, None), True),
                                          (CA_KU, True)])
        base = [(x509.BasicConstraints(True, 0), True)] if inter_exts is None else []
        ku = [(inter_ku, True)] if inter_ku is not None else []
        self.inter = _cert(_name("Profile Issuing"), self.root.subject, self.inter_key,
                           self.root_key, base + ku + list(inter_exts or []))
        default_leaf: list[Ext] = [(x509.BasicConstraints(False, None), True), (EE_KU, True)]
        self.leaf = _cert(_name("Profile User") if leaf_subject is None else leaf_subject,
                          self.inter.subject, self.leaf_key, self.inter_key,
                          default_leaf + list(leaf_exts or []))

    def crl(self, *, number: int | None = 1, number_critical: bool = False,
            revoked: tuple[int, ...] = ()) -> x509.CertificateRevocationList:
        b = (x509.CertificateRevocationListBuilder().issuer_name(self.inter.subject)
             .last_update(NOW - dt.timedelta(minutes=5)).next_update(NOW + dt.timedelta(days=1))
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                 self.inter_key.public_key()), False))
        if number is not None:
            b = b.add_extension(x509.CRLNumber(number), number_critical)
        for serial in revoked:
            b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                          .revocation_date(NOW - dt.timedelta(minutes=1)).build())
        return b.sign(self.inter_key, hashes.SHA256())


def verify(tmp: Path, p: Pki, crl: x509.CertificateRevocationList | None = None,
           leaf: x509.Certificate | None = None,
           relax: tuple[str, ...] = ()) -> tuple[int, dict[str, Any]]:
    files = {"leaf": (leaf or p.leaf).public_bytes(serialization.Encoding.PEM),
             "root": p.root.public_bytes(serialization.Encoding.PEM),
             "inter": p.inter.public_bytes(serialization.Encoding.PEM)}
    for name, data in files.items():
        (tmp / f"{name}.pem").write_bytes(data)
    args = [str(tmp / "leaf.pem"), "--trust", str(tmp / "root.pem"), "--untrusted",
            str(tmp / "inter.pem"), "--json", *(f"--relax={r}" for r in relax)]
    if crl is not None:
        (tmp / "crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        args += ["--crl", str(tmp / "crl.pem")]
    r = CliRunner().invoke(pki, ["verify", *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, json.loads(r.output)


def refused_for(tmp: Path, p: Pki, **kw: Any) -> str:
    code, out = verify(tmp, p, **kw)
    assert code == 1, out
    assert out["reason"] == "certificate_malformed", out
    return str(out["details"].get("check"))


def _raw_ext(oid: x509.ObjectIdentifier, der: bytes) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(oid, der)


def test_a_conforming_chain_is_valid(tmp_path: Path) -> None:
    assert verify(tmp_path, Pki())[0] == 0


@pytest.mark.parametrize("serial,check", [
    (0, "serial_not_positive"),
    (-5, "serial_not_positive"),
    (1 << 160, "serial_too_long"),  # 21 octets
])
def test_bad_serial_numbers_are_refused(tmp_path: Path, serial: int, check: str) -> None:
    p = Pki()

    def set_serial(tbs: Any) -> None:
        tbs["serial_number"] = serial

    leaf = _resign(p.leaf, p.inter_key, set_serial)
    assert refused_for(tmp_path, p, leaf=leaf) == check


def test_a_twenty_octet_serial_is_accepted(tmp_path: Path) -> None:
    p = Pki()

    def set_serial(tbs: Any) -> None:
        tbs["serial_number"] = (1 << 151) + 7  # 20 octets with the sign octet

    assert profile.serial_octets((1 << 151) + 7) == 20
    assert verify(tmp_path, p, leaf=_resign(p.leaf, p.inter_key, set_serial))[0] == 0


def test_ca_basic_constraints_not_critical(tmp_path: Path) -> None:
    p = Pki(inter_exts=[(x509.BasicConstraints(True, 0), False)])
    assert refused_for(tmp_path, p) == "ca_basic_constraints_not_critical"


def test_name_constraints_in_an_end_entity(tmp_path: Path) -> None:
    nc = x509.NameConstraints([x509.DNSName("example.gov")], None)
    assert refused_for(tmp_path, Pki(leaf_exts=[(nc, True)])) == "name_constraints_in_end_entity"


def test_name_constraints_not_critical(tmp_path: Path) -> None:
    nc = x509.NameConstraints([x509.DNSName("example.gov")], None)
    p = Pki(inter_exts=[(x509.BasicConstraints(True, 0), True), (nc, False)])
    assert refused_for(tmp_path, p) == "name_constraints_not_critical"


def test_policy_constraints_not_critical(tmp_path: Path) -> None:
    pc = x509.PolicyConstraints(require_explicit_policy=None, inhibit_policy_mapping=0)
    p = Pki(inter_exts=[(x509.BasicConstraints(True, 0), True), (pc, False)])
    assert refused_for(tmp_path, p) == "policy_constraints_not_critical"


def test_empty_subject_with_non_critical_san(tmp_path: Path) -> None:
    san = x509.SubjectAlternativeName([x509.RFC822Name("user@example.gov")])
    p = Pki(leaf_subject=x509.Name([]), leaf_exts=[(san, False)])
    assert refused_for(tmp_path, p) == "empty_subject_san_not_critical"


def test_empty_subject_with_critical_san_is_accepted(tmp_path: Path) -> None:
    san = x509.SubjectAlternativeName([x509.RFC822Name("user@example.gov")])
    assert verify(tmp_path, Pki(leaf_subject=x509.Name([]), leaf_exts=[(san, True)]))[0] == 0


@pytest.mark.parametrize("name", [".example.gov", "under_score.example.gov",
                                  "www.*.example.gov", "*www.example.gov", "example..gov"])
def test_malformed_dns_names_in_san(tmp_path: Path, name: str) -> None:
    san = x509.SubjectAlternativeName([x509.DNSName(name)])
    assert refused_for(tmp_path, Pki(leaf_exts=[(san, False)])) == "malformed_dns_name"


def test_leftmost_wildcard_dns_name_is_accepted(tmp_path: Path) -> None:
    san = x509.SubjectAlternativeName([x509.DNSName("*.example.gov")])
    assert verify(tmp_path, Pki(leaf_exts=[(san, False)]))[0] == 0


@pytest.mark.parametrize("email", ["no-at-sign.example.gov", "a@b@example.gov",
                                   "user@under_score.gov", "@example.gov"])
def test_malformed_email_in_san(tmp_path: Path, email: str) -> None:
    # The builder validates addresses; this test needs the bad ones on the wire.
    san = x509.SubjectAlternativeName([x509.RFC822Name._init_without_validation(email)])
    assert refused_for(tmp_path, Pki(leaf_exts=[(san, False)])) == "malformed_email"


def test_malformed_ip_in_san(tmp_path: Path) -> None:
    # SEQUENCE { [7] 3 octets }: an iPAddress that is neither IPv4 nor IPv6.
    san = _raw_ext(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, bytes.fromhex("30058703c0a801"))
    assert refused_for(tmp_path, Pki(leaf_exts=[(san, False)])) == "malformed_ip_address"


@pytest.mark.parametrize("base,check", [
    (x509.DNSName("under_score.gov"), "malformed_dns_name"),
    (x509.DNSName("bad-.example.gov"), "malformed_dns_name"),
    (x509.RFC822Name._init_without_validation("a@b@example.gov"), "malformed_email"),
])
def test_malformed_names_in_name_constraints(tmp_path: Path, base: x509.GeneralName,
                                             check: str) -> None:
    nc = x509.NameConstraints([base], None)
    p = Pki(inter_exts=[(x509.BasicConstraints(True, 0), True), (nc, True)])
    assert refused_for(tmp_path, p) == check


def test_malformed_ip_in_name_constraints(tmp_path: Path) -> None:
    # permittedSubtrees { [7] 192.168.0.0 / mask 255.0.255.0 }: a non-contiguous mask.
    nc = _raw_ext(ExtensionOID.NAME_CONSTRAINTS,
                  bytes.fromhex("300ea00c300a8708c0a80000ff00ff00"))
    p = Pki(inter_exts=[(x509.BasicConstraints(True, 0), True), (nc, True)])
    assert refused_for(tmp_path, p) == "malformed_ip_address"


def test_well_formed_ip_constraint_is_accepted(tmp_path: Path) -> None:
    nc = x509.NameConstraints([x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))], None)
    p = Pki(inter_exts=[(x509.BasicConstraints(True, 0), True), (nc, True)])
    assert verify(tmp_path, p)[0] == 0


def test_crl_without_crl_number(tmp_path: Path) -> None:
    p = Pki()
    assert refused_for(tmp_path, p, crl=p.crl(number=None)) == "crl_number_missing"


def test_crl_number_marked_critical(tmp_path: Path) -> None:
    p = Pki()
    assert refused_for(tmp_path, p, crl=p.crl(number_critical=True)) == "crl_number_critical"


def test_crl_issuer_key_usage_without_crl_sign(tmp_path: Path) -> None:
    ku = x509.KeyUsage(False, False, False, False, False, True, False, False, False)
    p = Pki(inter_ku=ku)
    assert refused_for(tmp_path, p, crl=p.crl()) == "crl_issuer_without_crl_sign"


def test_crl_issuer_without_any_key_usage_is_allowed(tmp_path: Path) -> None:
    p = Pki(inter_ku=None)
    code, out = verify(tmp_path, p, crl=p.crl())
    assert code == 0, out
    assert out["revocation"] == "soft_fail"  # the root's CRL was not given
    code, out = verify(tmp_path, p, crl=p.crl(revoked=(p.leaf.serial_number,)))
    assert code == 1 and out["reason"] == "certificate_revoked"


def test_every_documented_check_has_a_sentence() -> None:
    for check in profile.CHECKS:
        assert profile.Violation(check, "CN=x").sentence.endswith(".")


def test_ca_upload_refuses_musts_and_warns_on_shoulds() -> None:
    p = Pki()
    errors, warnings = profile.check_ca_upload(p.root.public_bytes(serialization.Encoding.PEM))
    assert errors == [] and any("short serial number" in w for w in warnings)
    bad = Pki(inter_exts=[(x509.BasicConstraints(True, 0), False)])
    errors, _ = profile.check_ca_upload(bad.inter.public_bytes(serialization.Encoding.DER))
    assert any("basicConstraints is not critical" in e for e in errors)
    errors, _ = profile.check_ca_upload(b"not a certificate")
    assert errors and "cannot be parsed" in errors[0]
    errors, _ = profile.check_ca_upload(p.leaf.public_bytes(serialization.Encoding.DER))
    assert any("not a CA" in e for e in errors)


@pytest.mark.parametrize("pki_", [
    pytest.param(lambda: Pki(inter_exts=[(x509.BasicConstraints(True, 0), False)]),
                 id="basicConstraints"),
    pytest.param(lambda: Pki(inter_exts=[(x509.BasicConstraints(True, 0), True), (
        x509.PolicyConstraints(require_explicit_policy=None, inhibit_policy_mapping=0), False)]),
        id="policyConstraints")])
def test_a_directory_may_accept_noncritical_ca_constraints(tmp_path: Path, pki_: Any) -> None:
    """The relaxation turns exactly these two checks into warnings: refused without it (above),
    valid with it, and every other check still refuses."""
    p = pki_()
    code, out = verify(tmp_path, p, relax=("accept_noncritical_constraints",))
    assert code == 0, out
    errors, warnings = profile.check_ca_upload(
        p.inter.public_bytes(serialization.Encoding.DER),
        profile.ProfileOptions(accept_noncritical_constraints=True))
    assert errors == [] and any("relaxes that rule" in w for w in warnings), warnings
    assert profile.check_ca_upload(p.inter.public_bytes(serialization.Encoding.DER))[0]
    nc = x509.NameConstraints([x509.DNSName("example.gov")], None)
    still = Pki(inter_exts=[(x509.BasicConstraints(True, 0), False), (nc, False)])
    code, out = verify(tmp_path, still, relax=("accept_noncritical_constraints",))
    assert (code, out["details"]["check"]) == (1, "name_constraints_not_critical")


def test_a_relaxed_violation_is_accepted_with_a_warning(tmp_path: Path) -> None:
    p = Pki(inter_exts=[(x509.BasicConstraints(True, 0), False)])
    code, out = verify(tmp_path, p, relax=("accept_noncritical_constraints",))
    assert code == 0, out
    [warning] = out["evidence"]["profile_warnings"]
    assert "basicConstraints is not critical" in warning and "relaxes that rule" in warning
    code, out = verify(tmp_path, Pki(), relax=("accept_noncritical_constraints",))
    assert code == 0 and "profile_warnings" not in out["evidence"]
