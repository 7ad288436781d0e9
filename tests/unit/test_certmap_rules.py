"""broker.kinds.CertmapRule is the one list of certmap rules: every other place derives from it
(the admin choices, the LDAP-only rules, the store's statements and indexes, the in-memory
matcher), and each rule's folding and values decide both the SQL lookup and the match."""

from __future__ import annotations

from broker.kinds import DEFAULT_CERTMAP, LOCAL_CERTMAP_RULES, CertmapRule
from broker.pki.identity import CERTMAP_RULES, CertIdentity, UserRecord, map_certificate

IDENT = CertIdentity(subject="CN=Alice,O=Corp", upn="Alice@Corp.Example",
                     emails=("Alice@Mail.Example", "a@corp.example"), fasc_n=None,
                     card_uuid=None, fingerprint="ab" * 32)


def test_every_place_takes_its_rules_from_the_enum() -> None:
    from broker.admin.directories import CERTMAP_RULES as ADMIN_RULES
    from broker.service.ldapdir import LDAP_RULES
    from broker.store.models import User
    from broker.store.statements import USER_WITH_WORKSPACES

    values = tuple(r.value for r in CertmapRule)
    assert ADMIN_RULES == values
    assert CERTMAP_RULES == ("upn", "email", "subject", "fingerprint")
    assert LDAP_RULES == tuple(r.value for r in CertmapRule if r.ldap_only)
    assert set(USER_WITH_WORKSPACES) == set(LOCAL_CERTMAP_RULES)
    indexes = {i.name for i in User.__table__.indexes}  # type: ignore[attr-defined]
    assert {f"ix_users_certmap_{r.value}" for r in LOCAL_CERTMAP_RULES} <= indexes
    assert all(r.column in User.__table__.c for r in LOCAL_CERTMAP_RULES)  # type: ignore[attr-defined]
    assert DEFAULT_CERTMAP == (CertmapRule.UPN, CertmapRule.EMAIL)


def test_each_rule_binds_and_matches_what_it_compares() -> None:
    assert CertmapRule.UPN.cert_values(IDENT) == ("alice@corp.example",)
    assert CertmapRule.EMAIL.cert_values(IDENT) == ("a@corp.example", "alice@mail.example")
    assert CertmapRule.SUBJECT.cert_values(IDENT) == ("CN=Alice,O=Corp",)
    assert CertmapRule.UPN.matches(IDENT, "ALICE@corp.example")
    assert CertmapRule.EMAIL.matches(IDENT, "alice@MAIL.example")
    assert not CertmapRule.SUBJECT.matches(IDENT, "cn=alice,o=corp")  # exact
    assert CertmapRule.FINGERPRINT.matches(IDENT, "AB" * 32)
    assert not CertmapRule.UPN.matches(IDENT, None)
    assert CertmapRule.UPN.cert_values(CertIdentity("CN=x", None, (), None, None, "00")) == ()


def test_the_first_rule_that_finds_anybody_decides() -> None:
    users = [UserRecord("alice", upn="alice@corp.example"),
             UserRecord("mail-alice", email="a@corp.example")]
    assert map_certificate(IDENT, ["upn", "email"], users).username == "alice"
    assert map_certificate(IDENT, ["email", "upn"], users).username == "mail-alice"


def test_an_ldap_only_rule_has_no_local_lookup() -> None:
    import pytest

    for rule in CertmapRule:
        if rule.ldap_only:
            assert rule.column is None
            with pytest.raises(ValueError):
                rule.cert_values(IDENT)
