"""Issue 27: a first-time card at native speed. cryptography's Rust verifier builds and checks
the path where its policy is the directory's, the broker's cheap checks follow, and the
pure-Python engines run only for what it cannot do. Verdicts (accepted or the refusal code) and
the policy set must be identical with the fast path on and off, on every PKITS path, with and
without CRLs; and the cases the fast path leaves to the engines are left to them."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from broker.pki import (
    PkiError,
    RevocationSettings,
    TrustStore,
    chain,
    issue,
    policies,
    verify_certificate,
)
from broker.pki.policies import PolicyInputs

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))


def _verdict(leaf: Any, store: TrustStore, **kw: Any) -> tuple[str, list[str]]:
    try:
        r = verify_certificate(leaf, [], store, **kw)
        return "valid", r.policies
    except PkiError as exc:
        return exc.code, []


@pytest.fixture(scope="module")
def pkits() -> tuple[dict[str, bytes], TrustStore]:
    try:
        import cryptography_vectors  # noqa: F401
    except ImportError:
        from tests.support.require import unavailable

        unavailable("pkits", "PKITS ships in cryptography-vectors")
    from bench.pkits_agreement import pkits_dir

    base = pkits_dir()
    certs = {p.stem: p.read_bytes() for p in (base / "certs").glob("*.crt")}
    pool = []
    for name, der in certs.items():
        if not name.endswith("EE") and name != "TrustAnchorRootCertificate":
            try:
                pool.append(x509.load_der_x509_certificate(der))
            except ValueError:
                continue
    crls = []
    for p in (base / "crls").glob("*.crl"):
        try:
            crls.append(x509.load_der_x509_crl(p.read_bytes()))
        except ValueError:
            continue
    anchor = x509.load_der_x509_certificate(certs["TrustAnchorRootCertificate"])
    return certs, TrustStore([anchor], pool, crls, verdicts=None)


@pytest.mark.parametrize("crl", [False, True], ids=["no-revocation", "crls"])
def test_pkits_verdicts_identical(pkits: Any, crl: bool, monkeypatch: pytest.MonkeyPatch
                                  ) -> None:
    from bench.pkits_agreement import AT

    certs, store = pkits
    rev = RevocationSettings(crl=crl, ocsp=False, fail_mode="hard")

    def offline(*_: object) -> bytes:
        from broker.pki.revocation import FetchError

        raise FetchError("offline")

    kw = {"purpose": "any", "max_depth": 255, "revocation": rev, "fetch": offline, "at": AT}
    names = sorted(n for n in certs if n.endswith("EE"))
    fast_taken = 0
    native_result = chain._native_result

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal fast_taken
        out = native_result(*args, **kwargs)
        fast_taken += out is not None
        return out

    monkeypatch.setattr(chain, "_native_result", counting)
    with_fast = {n: _verdict(certs[n], store, **kw) for n in names}
    monkeypatch.setattr(chain, "NATIVE_FAST_PATH", False)
    without = {n: _verdict(certs[n], store, **kw) for n in names}
    assert {n: v for n, v in with_fast.items() if without[n] != v} == {}
    assert fast_taken >= 40, fast_taken  # the fast path really decided many of them


def _pki() -> tuple[issue.Issued, issue.Issued]:
    root = issue.make_root("Fast Root")
    return root, issue.make_intermediate(root, "Fast Issuing")


def test_a_plain_first_time_card_never_reaches_the_engines(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    root, inter = _pki()
    ran: list[str] = []
    monkeypatch.setattr(policies, "_run", lambda *a, **k: ran.append("engine"))
    monkeypatch.setattr(chain, "_openssl_path", lambda *a, **k: ran.append("openssl"))
    store = TrustStore([root.cert], [inter.cert], verdicts=None)
    user = issue.make_user_cert(inter, "Fast User", upn="f@fast.example")
    r = verify_certificate(user.cert_der(), [], store, revocation=RevocationSettings(crl=False))
    assert ran == [] and r.revocation_status == "not_checked"
    assert [c.subject for c in r.chain] == [user.cert.subject, inter.cert.subject,
                                            root.cert.subject]


@pytest.mark.parametrize("inputs", [PolicyInputs.of(["2.16.840.1.101.3.2.1.3.13"]),
                                    PolicyInputs(explicit=True)], ids=["required", "explicit"])
def test_required_policies_go_to_the_engine(monkeypatch: pytest.MonkeyPatch,
                                            inputs: PolicyInputs) -> None:
    root, inter = _pki()
    calls: list[object] = []
    real = chain._native_result

    def spy(*a: Any, **k: Any) -> Any:
        out = real(*a, **k)
        calls.append(out)
        return out

    monkeypatch.setattr(chain, "_native_result", spy)
    store = TrustStore([root.cert], [inter.cert], verdicts=None)
    user = issue.make_user_cert(inter, "Policy User", upn="p@fast.example")
    with pytest.raises(PkiError) as err:
        verify_certificate(user.cert_der(), [], store, policy=inputs,
                           revocation=RevocationSettings(crl=False))
    assert err.value.code == "certificate_policy_mismatch"
    assert calls == [None]


def test_a_returning_card_is_answered_from_the_cache_without_a_path() -> None:
    root, inter = _pki()
    store = TrustStore([root.cert], [inter.cert])
    user = issue.make_user_cert(inter, "Return User", upn="r@fast.example")
    rev = RevocationSettings(crl=False)
    first = verify_certificate(user.cert_der(), [], store, revocation=rev)
    assert store.verdicts is not None
    hits = store.verdicts.hits
    assert verify_certificate(user.cert_der(), [], store, revocation=rev) is first
    assert store.verdicts.hits == hits + 1
    # The path's intermediate is gone from the pool: the kept verdict does not apply.
    bare = TrustStore([root.cert], [], verdicts=store.verdicts)
    with pytest.raises(PkiError):
        verify_certificate(user.cert_der(), [], bare, revocation=rev)
    assert verify_certificate(user.cert_der(), [inter.cert_der()], bare, revocation=rev).chain
    # The root is no longer an anchor: handing it over in the chain does not revive the verdict.
    other = TrustStore([issue.make_root("Other Root").cert], [], verdicts=store.verdicts)
    with pytest.raises(PkiError) as err:
        verify_certificate(user.cert_der(), [inter.cert_der(), root.cert_der()], other,
                           revocation=rev)
    assert err.value.code == "certificate_untrusted"


def test_expired_anchor_is_left_to_openssl() -> None:
    now = dt.datetime.now(dt.UTC)
    root = issue.make_root("Old Root", not_before=now - dt.timedelta(days=30),
                           not_after=now - dt.timedelta(days=1))
    inter = issue.make_intermediate(root, "Old Issuing")
    user = issue.make_user_cert(inter, "Old User")
    with pytest.raises(PkiError) as err:
        verify_certificate(user.cert_der(), [inter.cert_der()], TrustStore([root.cert]),
                           revocation=RevocationSettings(crl=False))
    assert err.value.code == "certificate_expired"


@pytest.mark.parametrize("email", ["bob@corp.example", "bob@evil.example"])
def test_subject_email_under_rfc822_constraints_same_verdict(monkeypatch: pytest.MonkeyPatch,
                                                             email: str) -> None:
    """RFC 5280 §4.2.1.10: rfc822Name constraints apply to a legacy emailAddress in the
    subject. Such paths are left to the engines; the verdict is the same either way."""
    from cryptography.x509.oid import NameOID

    from tests.support import rfc5280_gaps as gaps

    rk, ik, lk = gaps.key(), gaps.key(), gaps.key()
    root = gaps.cert(gaps.name("Mail Root"), gaps.name("Mail Root"), rk, rk, gaps.ca_exts())
    nc = x509.NameConstraints([x509.RFC822Name("corp.example")], None)
    inter = gaps.cert(gaps.name("Mail Issuing"), root.subject, ik, rk,
                      gaps.ca_exts(0, [(nc, True)]))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bob"),
                         x509.NameAttribute(NameOID.EMAIL_ADDRESS, email)])
    leaf = gaps.cert(subject, inter.subject, lk, ik, gaps.leaf_exts())
    store = TrustStore([root], [inter], verdicts=None)
    rev = RevocationSettings(crl=False)
    on = _verdict(leaf, store, revocation=rev)
    monkeypatch.setattr(chain, "NATIVE_FAST_PATH", False)
    assert _verdict(leaf, store, revocation=rev) == on
    assert (on[0] == "valid") == email.endswith("@corp.example")


@pytest.mark.parametrize("cn", ["host.corp.example", "host.evil.example"])
def test_common_name_under_dns_constraints_same_verdict(monkeypatch: pytest.MonkeyPatch,
                                                        cn: str) -> None:
    """A leaf without subjectAltName whose common name looks like a host, under dNSName
    constraints: OpenSSL checks the name, cryptography does not; the engines decide."""
    from tests.support import rfc5280_gaps as gaps

    rk, ik, lk = gaps.key(), gaps.key(), gaps.key()
    root = gaps.cert(gaps.name("Host Root"), gaps.name("Host Root"), rk, rk, gaps.ca_exts())
    nc = x509.NameConstraints([x509.DNSName("corp.example")], None)
    inter = gaps.cert(gaps.name("Host Issuing"), root.subject, ik, rk,
                      gaps.ca_exts(0, [(nc, True)]))
    leaf = gaps.cert(gaps.name(cn), inter.subject, lk, ik, gaps.leaf_exts())
    store = TrustStore([root], [inter], verdicts=None)
    rev = RevocationSettings(crl=False)
    on = _verdict(leaf, store, revocation=rev)
    monkeypatch.setattr(chain, "NATIVE_FAST_PATH", False)
    assert _verdict(leaf, store, revocation=rev) == on
