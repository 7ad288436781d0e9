"""Issue 13, item 8: a first-time verification runs the RFC 5280 engine once, and what depends
only on CA certificates and CRLs is remembered per fingerprint, bounded."""

from __future__ import annotations

import pytest

from broker.pki import (
    PkiError,
    RevocationSettings,
    TrustStore,
    issue,
    paths,
    policies,
    verify_certificate,
)
from broker.pki.memo import FingerprintMemo


@pytest.fixture(scope="module")
def pki():  # type: ignore[no-untyped-def]
    root = issue.make_root("Memo Root")
    inter = issue.make_intermediate(root, "Memo Issuing")
    return root, inter


def _store(root, inter) -> TrustStore:  # type: ignore[no-untyped-def]
    # No verdict cache: every call is a first-time verification.
    return TrustStore([root.cert], [inter.cert], [issue.make_crl(inter, []),
                                                  issue.make_crl(root, [])], verdicts=None)


@pytest.mark.parametrize("native", [False, True])
def test_one_engine_pass_decides_policies_and_crls(pki, monkeypatch, native) -> None:  # type: ignore[no-untyped-def]
    """One engine pass for policies and CRLs; none at all on the native fast path (issue 27)
    when the CRLs are plain complete ones that list nothing of the path."""
    from broker.pki import chain

    monkeypatch.setattr(chain, "NATIVE_FAST_PATH", native)
    root, inter = pki
    runs: list[str] = []
    real = policies._run

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        runs.append(kwargs["mode"])
        return real(*args, **kwargs)

    monkeypatch.setattr(policies, "_run", counted)
    user = issue.make_user_cert(inter, "Memo User", upn="m@memo.example")
    result = verify_certificate(user.cert_der(), [], _store(root, inter))
    assert result.revocation_status == "good"
    assert runs == ([] if native else ["require"]), f"the engine ran {len(runs)} times: {runs}"
    assert [e["crl_issuer"] for e in result.revocation_evidence["checked"]] == [
        inter.cert.subject.rfc4514_string(), root.cert.subject.rfc4514_string()]
    # A card on the CRL goes to the engine, which says revoked, in its words.
    bad = issue.make_user_cert(inter, "Memo Revoked", upn="r@memo.example")
    store = TrustStore([root.cert], [inter.cert], [issue.make_crl(inter, [bad.cert.serial_number]),
                                                   issue.make_crl(root, [])], verdicts=None)
    runs.clear()
    with pytest.raises(PkiError) as err:
        verify_certificate(bad.cert_der(), [], store)
    assert err.value.code == "certificate_revoked" and "require" in runs


def test_a_failed_pass_is_run_again_only_to_tell_why(pki, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The root's CRL is missing: the one pass fails for lack of revocation information, and the
    # path alone (no CRLs) plus a tolerant pass tell it from a broken path. Soft-fail accepts.
    root, inter = pki
    runs: list[str] = []
    real = policies._run

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        runs.append(kwargs["mode"])
        return real(*args, **kwargs)

    monkeypatch.setattr(policies, "_run", counted)
    store = TrustStore([root.cert], [inter.cert], [issue.make_crl(inter, [])], verdicts=None)
    user = issue.make_user_cert(inter, "Memo User 2", upn="m@memo.example")
    result = verify_certificate(user.cert_der(), [], store)
    assert result.revocation_status == "soft_fail"
    assert runs[0] == "require" and "soft-fail" in runs


@pytest.mark.parametrize("native", [False, True])
def test_a_new_card_under_known_cas_does_not_recheck_the_ca_links(pki, monkeypatch, native) -> None:  # type: ignore[no-untyped-def]
    """On the engines' path the CA links are remembered per fingerprint; on the native fast path
    (issue 27) cryptography's verifier checks the signatures itself and the memo is not used."""
    from broker.pki import chain

    monkeypatch.setattr(chain, "NATIVE_FAST_PATH", native)
    root, inter = pki
    store = _store(root, inter)
    verify_certificate(issue.make_user_cert(inter, "First", upn="a@memo.example").cert_der(), [],
                       store)
    misses = paths.SIGNATURES.misses
    verify_certificate(issue.make_user_cert(inter, "Second", upn="b@memo.example").cert_der(),
                       [], store)
    # Only the new card's own signature is new work; intermediate → root is remembered.
    assert paths.SIGNATURES.misses - misses == (0 if native else 1)


def test_memo_is_bounded_and_evicts_the_least_recently_used() -> None:
    memo: FingerprintMemo[int] = FingerprintMemo(size=2)
    memo.get("a", lambda: 1)
    memo.get("b", lambda: 2)
    memo.get("a", lambda: 99)  # a hit: "a" is now the most recent
    memo.get("c", lambda: 3)   # evicts "b"
    assert len(memo) == 2
    assert memo.get("a", lambda: 99) == 1
    assert memo.get("b", lambda: 42) == 42  # recomputed: it was evicted


@pytest.mark.parametrize("native", [False, True])
def test_no_revocation_runs_the_engine_once_too(pki, monkeypatch, native) -> None:  # type: ignore[no-untyped-def]
    """Without revocation the RFC 5280 engine runs once; with the native fast path (issue 27)
    not at all: cryptography's verifier and the cheap checks decide."""
    from broker.pki import chain

    monkeypatch.setattr(chain, "NATIVE_FAST_PATH", native)
    root, inter = pki
    runs: list[str] = []
    real = policies._run

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        runs.append(kwargs["mode"])
        return real(*args, **kwargs)

    monkeypatch.setattr(policies, "_run", counted)
    verify_certificate(issue.make_user_cert(inter, "NoRev", upn="c@memo.example").cert_der(), [],
                       _store(root, inter), revocation=RevocationSettings(crl=False))
    assert len(runs) == (0 if native else 1)
