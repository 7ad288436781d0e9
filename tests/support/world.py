"""A realistic test world: a PIV-style PKI and directories applied through `broker admin apply`.

* ``corp`` — us-gov-west-1, smart cards pre- and in-session, password login on, CRL checking.
  Users: alice (WSP AUTO_STOP STOPPED + PCoIP), bob (WSP ALWAYS_ON AVAILABLE), carol (PCoIP
  only), dave (password only, PCoIP).
* ``east`` — us-east-1, smart cards in-session only; user erin (WSP AVAILABLE).
* ``other`` — us-gov-west-1 with its own, unrelated CA; user olga.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.dirfile import directory, render, user, workspace
from tests.support.softcard import SoftCard


@dataclass
class World:
    codes: dict[str, str]
    cards: dict[str, SoftCard]
    path: Path
    pki: dict[str, Any] = field(default_factory=dict)


def directory_file(removal: str = "lock") -> str:
    return render(
        directory("corp", "Corp GovCloud", password_login=True,
                  smart_card={"pre_session": True, "in_session": True,
                              "removal_action": removal},
                  revocation={"crl": True, "ocsp": False, "fail_mode": "soft"},
                  trust_anchors=["pki/root.pem"], intermediates=["pki/issuing.pem"],
                  crls=["pki/issuing.crl.pem"], certmap=["upn", "email"],
                  users=[user("alice", email="alice@corp.example"), user("bob"),
                         user("carol"),
                         user("dave", upn=None, password="correct horse battery staple"),
                         user("rita")],
                  workspaces=[workspace("alice", running_mode="AUTO_STOP", state="STOPPED"),
                              workspace("alice", id="ws-alice-pcoip", protocol="PCoIP"),
                              workspace("bob"), workspace("carol", protocol="PCoIP"),
                              workspace("dave", protocol="PCoIP"), workspace("rita")]),
        directory("east", "Corp East", "us-east-1", password_login=True,
                  smart_card={"pre_session": True, "in_session": True},
                  revocation={"crl": False}, trust_anchors=["pki/root.pem"],
                  intermediates=["pki/issuing.pem"],
                  users=[user("erin", password="erin password")],
                  workspaces=[workspace("erin")]),
        directory("other", "Other Agency", smart_card={"pre_session": True,
                                                       "in_session": True},
                  revocation={"crl": False}, trust_anchors=["pki/other-root.pem"],
                  users=[user("olga", upn="olga@other.example")],
                  workspaces=[workspace("olga")]))


def card(issued: Any, *chain: Any) -> SoftCard:
    return SoftCard(issued.key, issued.cert, [c.cert for c in chain])


def build_world(base: Path, broker: Any, removal: str = "lock") -> World:
    """Make the PKI under ``base``, write and apply the directory file through the CLI."""
    from broker.pki import issue

    pki = base / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    root = issue.make_root("Corp Root CA")
    inter = issue.make_intermediate(root, "Corp Issuing CA")
    other_root = issue.make_root("Other Root CA")
    other_inter = issue.make_intermediate(other_root, "Other Issuing CA")
    cards = {
        "alice": card(issue.make_user_cert(inter, "Alice", upn="alice@corp.example",
                                           email="alice@corp.example",
                                           fasc_n=bytes(range(25))), inter),
        "alice_rsa": card(issue.make_user_cert(inter, "Alice RSA", "rsa-2048",
                                               upn="alice@corp.example"), inter),
        "bob": card(issue.make_user_cert(inter, "Bob", upn="bob@corp.example"), inter),
        "carol": card(issue.make_user_cert(inter, "Carol", upn="carol@corp.example"), inter),
        "erin": card(issue.make_user_cert(inter, "Erin", upn="erin@corp.example"), inter),
        "olga": card(issue.make_user_cert(other_inter, "Olga", upn="olga@other.example"),
                     other_inter),
        "expired": card(issue.make_user_cert(inter, "Alice old", upn="alice@corp.example",
                                             not_before=now - timedelta(days=400),
                                             not_after=now - timedelta(days=1)), inter),
        "wrong_eku": card(issue.make_user_cert(inter, "Alice email", upn="alice@corp.example",
                                               eku=("email-protection",)), inter),
        "revoked": card(issue.make_user_cert(inter, "Rita", upn="rita@corp.example"), inter),
        "stranger": card(issue.make_user_cert(inter, "Nobody", upn="nobody@corp.example"),
                         inter),
        "olga_in_corp": card(issue.make_user_cert(other_inter, "Alice?",
                                                  upn="alice@corp.example"), other_inter),
        # RFC 5280 profile violations (issue 13): refused as certificate_malformed.
        "ee_name_constraints": card(issue.make_user_cert(
            inter, "Alice NC", upn="alice@corp.example", extra_extensions=[(
                x509.NameConstraints([x509.DNSName("corp.example")], None), True)]), inter),
        "bad_dns_san": card(issue.make_user_cert(
            inter, "Alice DNS", extra_extensions=[(x509.SubjectAlternativeName(
                [x509.DNSName("under_score.corp.example")]), False)]), inter),
    }
    crl = issue.make_crl(inter, [cards["revoked"].cert.serial_number])
    (pki / "root.pem").write_bytes(root.cert_pem())
    (pki / "issuing.pem").write_bytes(inter.cert_pem())
    (pki / "issuing.crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    (pki / "other-root.pem").write_bytes(other_root.cert_pem())
    path = base / "directories.toml"
    path.write_text(directory_file(removal))
    out = broker.run_cli("admin", "apply", str(path), "--json")
    result = json.loads(out.stdout)
    codes = {d["id"]: d["registration_codes"][0] for d in result["directories"]}
    return World(codes, cards, path, {"root": root, "issuing": inter, "other_root": other_root})


@contextmanager
def world_broker(base: Path, env: dict[str, str]) -> Iterator[tuple[Any, World]]:
    """A broker on a SQLite database of its own under ``base``, started with ``env`` and the
    test world applied; stopped on exit. For module-scoped fixtures: each test then uses its
    own source addresses and users so that tests stay independent."""
    from broker.store import migrate
    from tests.support.server import BrokerProcess, free_port

    url = f"sqlite:///{base / 'broker.db'}"
    migrate.upgrade(url)
    bp = BrokerProcess(base / "broker", url, free_port(), free_port(), env=dict(env))
    bp.base.mkdir()
    bp.write_config()
    bp.start()
    try:
        yield bp, build_world(base / "world", bp)
    finally:
        bp.stop()
