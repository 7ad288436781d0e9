"""Issue 27: the last RFC 5280 classes an outside corpus found. Four invalid classes are
refused, each with its reason code and ``details.check`` (excluded wildcard DNS names, a CA
that is not self-signed without authorityKeyIdentifier, a critical subjectKeyIdentifier), and
two valid ones are accepted (self-issued intermediates do not count against the depth limit;
a constraint on an otherName type the leaf does not carry does not apply), each beside a
control. The PKIs are built with cryptography's builders (tests/support/rfc5280_gaps.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from broker.pki import PkiError, RevocationSettings, TrustStore, profile, verify_certificate
from broker.pki.cli import pki
from tests.support import rfc5280_gaps as gaps
from tests.support.rfc5280_gaps import CASES, Case


def _verify(case: Case) -> None:
    verify_certificate(case.leaf, case.chain, TrustStore(case.anchors),
                       max_depth=case.max_depth, revocation=RevocationSettings(crl=False))


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_each_class(case_id: str) -> None:
    case = CASES[case_id]()
    if case.refusal is None:
        _verify(case)
        return
    with pytest.raises(PkiError) as err:
        _verify(case)
    code, check = case.refusal
    assert err.value.code == code, err.value
    if check:
        assert err.value.details.get("check") == check, err.value.details


@pytest.mark.parametrize("case_id", ["excluded-dns-wildcard", "cross-root-anchor-without-aki",
                                     "critical-ski-intermediate",
                                     "self-issued-not-counted-depth1",
                                     "other-name-constraint-not-carried"])
def test_through_broker_pki_verify(tmp_path: Path, case_id: str) -> None:
    """`broker pki verify` runs the login verifier: same verdict, same check, exit 1/0."""
    case = CASES[case_id]()

    def pem(certs: list) -> bytes:  # type: ignore[type-arg]
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    (tmp_path / "leaf.pem").write_bytes(pem([case.leaf]))
    (tmp_path / "root.pem").write_bytes(pem(case.anchors))
    args = ["verify", str(tmp_path / "leaf.pem"), "--trust", str(tmp_path / "root.pem"),
            "--json", "--max-depth", str(case.max_depth)]
    if case.chain:
        (tmp_path / "chain.pem").write_bytes(pem(case.chain))
        args += ["--untrusted", str(tmp_path / "chain.pem")]
    r = CliRunner().invoke(pki, args)
    out = json.loads(r.output)
    if case.refusal is None:
        assert r.exit_code == 0, out
    else:
        assert r.exit_code == 1, out
        assert (out["reason"], out["details"].get("check")) == case.refusal, out


def test_new_checks_have_sentences_and_refuse_at_upload() -> None:
    for check in ("authority_key_identifier_missing", "subject_key_identifier_critical"):
        assert check in profile.CHECKS
    cross = CASES["cross-ca-without-aki"]().chain[1]
    errors, _ = profile.check_ca_upload(cross.public_bytes(serialization.Encoding.DER))
    assert any("authorityKeyIdentifier" in e for e in errors), errors
    k = gaps.key()  # self-signed without AKI: RFC 5280's one exception
    root = gaps.cert(gaps.name("Gap Plain Root"), gaps.name("Gap Plain Root"), k, k,
                     gaps.ca_exts(), aki=False)
    assert profile.check_ca_upload(root.public_bytes(serialization.Encoding.DER))[0] == []
    verify_certificate(root, [], TrustStore([root]), purpose="any",
                       revocation=RevocationSettings(crl=False))
