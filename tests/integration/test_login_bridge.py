"""Issue 13: an agency A PIV card logs in to a directory that trusts only agency B's root and
requires B's policy, through the Federal Bridge cross-certificates the card sends (policy
mapping B → bridge → A), over real TLS; without the mapping to the card's policy it is refused
as certificate_policy_mismatch. The path itself is pinned in tests/unit/pki/test_bridge.py."""

from __future__ import annotations

import json

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from broker.pki import issue
from tests.support import dirfile
from tests.support.softcard import SoftCard, SoftClient
from tests.unit.pki.test_bridge import A_OTHER, B_MEDIUM, federation

UPN = "alice@agency-a.example"


def _card(a_root_maps_to: str | None = None) -> tuple[SoftCard, x509.Certificate]:
    keys: dict[str, object] = {}
    san = x509.SubjectAlternativeName([issue._other_name_utf8(issue.UPN_OID, UPN)])
    f = (federation(card_exts=[(san, False)], keys=keys) if a_root_maps_to is None
         else federation(a_root_maps_to, card_exts=[(san, False)], keys=keys))
    # What an agency A card holds: its certificate, its issuing CA and the bridge
    # cross-certificates down from B's root (in no particular order).
    chain = [f["bridge_by_b"], f["a_issuing"], f["a_by_bridge"]]
    return SoftCard(keys["u"], f["card"], chain), f["b_root"]  # type: ignore[arg-type]


def _directory(broker, tmp_path, name: str, b_root: x509.Certificate) -> str:  # type: ignore[no-untyped-def]
    (tmp_path / f"{name}-b-root.pem").write_bytes(b_root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / f"{name}.toml").write_text(dirfile.directory(
        name, f"Agency B ({name})", smart_card={"pre_session": True, "in_session": True},
        revocation={"crl": False}, trust_anchors=[f"{name}-b-root.pem"], certmap=["upn"],
        required_policies=[B_MEDIUM], users=[dirfile.user("alice", upn=UPN)],
        workspaces=[dirfile.workspace("alice", id=f"ws-alice-{name}")]))
    out = broker.run_cli("admin", "apply", str(tmp_path / f"{name}.toml"), "--json")
    return str(json.loads(out.stdout)["directories"][0]["registration_codes"][0])


def test_agency_a_card_logs_in_to_agency_b_through_the_bridge(broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card, b_root = _card()
    code = _directory(broker, tmp_path, "agencyb", b_root)
    r = SoftClient(broker.client(), code).login(card)
    assert r.status == 200, r.body
    assert r.body["user"]["username"] == "alice"


def test_agency_a_card_is_refused_when_the_bridge_does_not_map_b_policy(broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card, b_root = _card(a_root_maps_to=A_OTHER)
    code = _directory(broker, tmp_path, "agencyb2", b_root)
    r = SoftClient(broker.client(), code).login(card)
    assert r.status == 401 and r.code == "certificate_policy_mismatch", r.body
