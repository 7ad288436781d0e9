"""Revocation coverage: a hard-fail directory's CA that no login could check is named before a
card is refused; and the card user reads a plain sentence for that refusal."""

from __future__ import annotations

import datetime as dt

import pytest

from broker.client.flow import ApiError, for_people
from broker.pki import coverage, issue
from broker.pki.revocation import RevocationSettings

NOW = dt.datetime.now(dt.UTC)
HARD = RevocationSettings(crl=True, ocsp=False, fail_mode="hard")


@pytest.fixture(scope="module")
def root() -> issue.Issued:
    return issue.make_root("Coverage Root")


def test_intermediate_without_any_source_is_a_gap_in_hard_mode(root: issue.Issued) -> None:
    inter = issue.make_intermediate(root, "Bare Issuing")
    found = coverage.gaps([root.cert], [inter.cert], [], HARD, NOW)
    assert [g.subject for g in found] == [inter.cert.subject.rfc4514_string()]
    assert "Coverage Root" in found[0].issuer
    assert "certificate_revocation_unknown" in found[0].message()


def test_soft_fail_or_revocation_off_has_no_gaps(root: issue.Issued) -> None:
    inter = issue.make_intermediate(root, "Bare Issuing")
    for settings in (RevocationSettings(fail_mode="soft"),
                     RevocationSettings(crl=False, ocsp=False, fail_mode="hard")):
        assert coverage.gaps([root.cert], [inter.cert], [], settings, NOW) == []


def test_an_uploaded_crl_of_the_issuer_covers_it(root: issue.Issued) -> None:
    inter = issue.make_intermediate(root, "Bare Issuing")
    # Explicit dates around NOW: NOW is fixed when the module is collected, which can be many
    # minutes before the test runs (a CRL made "now" would not be current yet at NOW).
    current = issue.make_crl(root, [], this_update=NOW - dt.timedelta(minutes=5),
                             next_update=NOW + dt.timedelta(days=7))
    assert coverage.gaps([root.cert], [inter.cert], [current], HARD, NOW) == []
    stale = issue.make_crl(root, [], this_update=NOW - dt.timedelta(days=9),
                           next_update=NOW - dt.timedelta(days=2))
    assert len(coverage.gaps([root.cert], [inter.cert], [stale], HARD, NOW)) == 1


def test_a_distribution_point_covers_it(root: issue.Issued) -> None:
    inter = issue.make_intermediate(root, "CDP Issuing", crl_url="http://pki.example/root.crl")
    assert coverage.gaps([root.cert], [inter.cert], [], HARD, NOW) == []


def test_an_ocsp_responder_covers_it_only_with_ocsp_on(root: issue.Issued) -> None:
    inter = issue.make_intermediate(root, "OCSP Issuing", ocsp_url="http://ocsp.example/")
    assert coverage.gaps([root.cert], [inter.cert], [], HARD, NOW) != []
    on = RevocationSettings(crl=False, ocsp=True, fail_mode="hard")
    assert coverage.gaps([root.cert], [inter.cert], [], on, NOW) == []


def test_card_user_reads_a_plain_sentence_with_the_code() -> None:
    exc = ApiError(401, "certificate_revocation_unknown",
                   "The revocation status cannot be established: CN=Bare Issuing: no CRL", {})
    line = for_people(exc)
    assert line == ("the broker cannot check whether your certificate is revoked; contact "
                    "your administrator (certificate_revocation_unknown)")
    other = ApiError(401, "certificate_expired", "The certificate has expired.", {})
    assert for_people(other) == "The certificate has expired."
