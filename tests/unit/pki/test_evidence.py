"""Issue 13, item 7: the evidence of a decision names the CRLs that actually decided it —
the base and the delta CRL, an indirect CRL by its own issuer — not every CRL that was around."""

from __future__ import annotations

import json

import pytest

from broker.pki import PkiError, TrustStore, verify_certificate
from broker.pki.policies import CRL_USE_RECORDED
from tests.support.crlsets import delta_pki, indirect_pki


def _checked(result) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    evidence = result.evidence()
    json.dumps(evidence)  # plain JSON, as the audit event stores it
    return list(evidence["revocation"]["checked"])


def test_the_engine_reports_which_crls_decided() -> None:
    assert CRL_USE_RECORDED, "pyhanko-certvalidator no longer offers the step we record"


def test_delta_crl_evidence_names_base_and_delta() -> None:
    p = delta_pki()
    user = p.user("Delta User")
    store = TrustStore([p.root.cert], [p.inter.cert], [p.base(), p.delta(), p.root_crl])
    result = verify_certificate(user.cert_der(), [], store)
    assert result.revocation_status == "good"
    leaf = [c for c in _checked(result) if c["certificate"] == user.cert.subject.rfc4514_string()]
    base = [c for c in leaf if not c["delta"]]
    delta = [c for c in leaf if c["delta"]]
    assert [c["crl_number"] for c in base] == [5]
    assert [(c["crl_number"], c["base_crl_number"]) for c in delta] == [(6, 5)]
    assert all(c["crl_issuer"] == p.inter.cert.subject.rfc4514_string() and c["this_update"]
               and c["next_update"] for c in leaf)


def test_a_certificate_revoked_only_on_the_delta_is_refused() -> None:
    p = delta_pki()
    user = p.user("Delta Revoked")
    store = TrustStore([p.root.cert], [p.inter.cert],
                       [p.base(), p.delta([user.cert.serial_number]), p.root_crl])
    with pytest.raises(PkiError) as err:
        verify_certificate(user.cert_der(), [], store)
    assert err.value.code == "certificate_revoked"


def test_indirect_crl_evidence_names_the_indirect_issuer() -> None:
    p = indirect_pki()
    user = p.user("Indirect User")
    store = TrustStore([p.root.cert], [p.inter.cert, p.crl_issuer.cert],
                       [p.indirect(), p.root_crl])
    result = verify_certificate(user.cert_der(), [], store)
    assert result.revocation_status == "good"
    [leaf] = [c for c in _checked(result)
              if c["certificate"] == user.cert.subject.rfc4514_string()]
    assert leaf["indirect"] is True
    assert leaf["crl_issuer"] == p.crl_issuer.cert.subject.rfc4514_string()
    assert leaf["crl_signed_by"] == p.crl_issuer.cert.subject.rfc4514_string()
    assert leaf["crl_number"] == 3
    # The issuing CA is decided by the root's CRL, a direct one (the engine also looked it up
    # on the indirect CRL, whose scope covers every issuer: a listing there would revoke it).
    ca = [c for c in _checked(result)
          if c["certificate"] == p.inter.cert.subject.rfc4514_string()]
    assert {(c["crl_issuer"], c["indirect"]) for c in ca} >= {
        (p.root.cert.subject.rfc4514_string(), False)}


def test_a_certificate_listed_on_the_indirect_crl_is_refused() -> None:
    p = indirect_pki()
    user = p.user("Indirect Revoked")
    store = TrustStore([p.root.cert], [p.inter.cert, p.crl_issuer.cert],
                       [p.indirect([user.cert.serial_number]), p.root_crl])
    with pytest.raises(PkiError) as err:
        verify_certificate(user.cert_der(), [], store)
    assert err.value.code == "certificate_revoked"


def test_a_crl_that_did_not_decide_is_not_evidence() -> None:
    # An unrelated CRL of the same issuer name's neighbour is loaded; only the deciding CRLs
    # (the issuing CA's and the root's) are named.
    p = delta_pki("Plain")
    other = delta_pki("Other")
    user = p.user("Plain User")
    store = TrustStore([p.root.cert], [p.inter.cert],
                       [p.base(), p.delta(), p.root_crl, other.base(), other.root_crl])
    issuers = {c["crl_issuer"] for c in _checked(verify_certificate(user.cert_der(), [], store))}
    assert issuers == {p.inter.cert.subject.rfc4514_string(),
                       p.root.cert.subject.rfc4514_string()}
