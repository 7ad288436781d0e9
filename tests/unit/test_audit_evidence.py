"""The evidence columns of an audit event, read from the details a login wrote."""

from __future__ import annotations

from types import SimpleNamespace

from broker.service import evidence


def row(**details: object) -> SimpleNamespace:
    return SimpleNamespace(details=details)


def test_subject_upn_and_rule_from_a_refusal() -> None:
    r = row(certificate={"subject": "CN=Zoë", "upn": "z@corp", "emails": None},
            certmap_rule=["upn", "email"])
    assert evidence.subject_of(r) == "CN=Zoë" and evidence.upn_of(r) == "z@corp"
    assert evidence.certmap_rule_of(r) == "upn, email"


def test_the_rule_of_an_ldap_directory_and_older_events() -> None:
    assert evidence.certmap_rule_of(row(ldap={"rule": "upn", "dn": "CN=x"})) == "upn"
    assert evidence.certmap_rule_of(row(rule="email")) == "email"
    assert evidence.certmap_rule_of(row(certmap_rule="upn", rule="email")) == "upn"
    empty = SimpleNamespace(details=None)
    assert evidence.subject_of(empty) is None and evidence.certmap_rule_of(empty) is None
    assert evidence.upn_of(row(certificate="not a mapping")) is None
