"""The peer: Debian's pam_pkcs11 (with OpenSC) and broker-client pam-auth, side by side.

Both are real PAM modules driven by pamtester, against the same CA and CRL and the same virtual
PIV card behind pcscd + vpcd. The README's comparison table is this test's output: run it with
``PAM_PEER_TABLE=FILE`` to write the table as Markdown.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from broker.cardsim import PivCard
from tests.integration.card.conftest import opensc_pkcs11_module
from tests.support import dirfile as df
from tests.support.pam import Desktop, PamPkcs11, audit, pam_pkcs11_problem, remove_service
from tests.support.pcsc import vpcd_cards
from tests.support.require import unavailable

pytestmark = [pytest.mark.pcsc, pytest.mark.slow]

DIRECTORIES = df.render(
    df.directory("peer", "Peer East", "us-east-1", password_login=True,
              smart_card={"pre_session": False, "in_session": True},
              revocation={"crl": True, "ocsp": False, "fail_mode": "hard"},
              trust_anchors=["pki/root.pem"], intermediates=["pki/issuing.pem"],
              crls=["pki/issuing.crl.pem", "pki/root.crl.pem"], certmap=["upn"],
              users=[df.user(n, password=f"pw-{n}") for n in ("erin", "rita", "pat")],
              workspaces=[df.workspace("erin"), df.workspace("rita"),
                          df.workspace("pat", protocol="PCoIP")]),
    df.directory("peer-off", "Peer East, in-session off", "us-east-1", password_login=True,
              smart_card={"pre_session": False, "in_session": False},
              revocation={"crl": False}, trust_anchors=["pki/root.pem"],
              intermediates=["pki/issuing.pem"], certmap=["upn"],
              users=[df.user("olive", password="pw-olive")], workspaces=[df.workspace("olive")]))

# situation, user, directory, card holder, PIN, end the session first
SITUATIONS = [
    ("valid card, WSP session, right PIN", "erin", "peer", "erin", "123456", False),
    ("wrong PIN", "erin", "peer", "erin", "000000", False),
    ("revoked card (on the CA's CRL)", "rita", "peer", "rita", "123456", False),
    ("PCoIP session", "pat", "peer", "pat", "123456", False),
    ("directory with in-session use off", "olive", "peer-off", "olive", "123456", False),
    ("session ended (terminated by an admin)", "erin", "peer", "erin", "123456", True),
]
EXPECTED = {  # situation -> (pam-auth, pam_pkcs11): what each one decides
    "valid card, WSP session, right PIN": ("granted", "granted"),
    "wrong PIN": ("pin_invalid", "refused"),
    "revoked card (on the CA's CRL)": ("certificate_revoked", "refused"),
    "PCoIP session": ("in_session_not_allowed", "granted"),
    "directory with in-session use off": ("in_session_not_allowed", "granted"),
    "session ended (terminated by an admin)": ("session_ended", "granted"),
}


@pytest.fixture
def peer_world(broker_factory: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    problem = pam_pkcs11_problem()
    if problem:
        unavailable("pam", problem)
    module = opensc_pkcs11_module()
    if module is None:
        unavailable("opensc", "opensc-pkcs11.so was not found")
    from broker.pki import issue
    from tests.support.databases import database_url

    with database_url("sqlite", tmp_path) as url:
        bp = broker_factory(url)
        # RSA keys: what pam_pkcs11's signature check and OpenSC handle on every version
        root = issue.make_root("Peer Root CA", "rsa-2048")
        inter = issue.make_intermediate(root, "Peer Issuing CA", "rsa-2048")
        people = {name: issue.make_user_cert(inter, name, "rsa-2048",
                                             upn=f"{name}@corp.example")
                  for name in ("erin", "rita", "pat", "olive")}
        crl = issue.make_crl(inter, [people["rita"].cert.serial_number])
        root_crl_pem = issue.make_crl(root, []).public_bytes(serialization.Encoding.PEM)
        pki = tmp_path / "peer" / "pki"
        pki.mkdir(parents=True)
        crl_pem = crl.public_bytes(serialization.Encoding.PEM)
        (pki / "root.pem").write_bytes(root.cert_pem())
        (pki / "issuing.pem").write_bytes(inter.cert_pem())
        (pki / "issuing.crl.pem").write_bytes(crl_pem)
        (pki / "root.crl.pem").write_bytes(root_crl_pem)
        (tmp_path / "peer" / "directories.toml").write_text(DIRECTORIES)
        out = bp.run_cli("admin", "apply", str(tmp_path / "peer" / "directories.toml"),
                         "--json")
        codes = {d["id"]: d["registration_codes"][0]
                 for d in json.loads(out.stdout)["directories"]}
        peer = PamPkcs11(tmp_path / "pam_pkcs11", f"smartcard-broker-peer-{os.getpid()}")
        peer.configure(module, [root.cert_pem(), inter.cert_pem()], [crl_pem, root_crl_pem])
        desktops: list[Desktop] = []
        try:
            yield {"broker": bp, "codes": codes, "people": people, "peer": peer,
                   "desktops": desktops, "tmp": tmp_path}
        finally:
            peer.remove()
            for d in desktops:
                d.end()
                remove_service(d.service)


def test_pam_auth_and_pam_pkcs11_decide_the_same_situations(peer_world: dict[str, Any]) -> None:
    w = peer_world
    rows = []
    for n, (situation, user, directory, holder, pin, end) in enumerate(SITUATIONS):
        d = Desktop(w["broker"], w["tmp"], f"smartcard-broker-peer-{os.getpid()}-{n}",
                    w["tmp"] / f"pam-auth-{n}.log", w["tmp"] / f"session-{n}.json")
        w["desktops"].append(d)
        d.log_in(w["codes"][directory], user, f"pw-{user}", f"ws-{user}", heartbeat_s=60)
        if end:
            w["broker"].run_cli("admin", "sessions", "terminate", d.session_id)
        person = w["people"][holder]
        with vpcd_cards(PivCard(key=person.key, certificate=person.cert)):
            ours_ok, line, _ = d.sudo(user, pin)
        with vpcd_cards(PivCard(key=person.key, certificate=person.cert)):
            theirs_ok, said = w["peer"].sudo(user, pin)
        ours = "granted" if ours_ok else line.split("reason=")[1].split(":")[0]
        theirs = "granted" if theirs_ok else "refused"
        rows.append((situation, ours, theirs, said))
        d.end()
    events = audit(w["broker"])
    sudo_events = [e for e in events if (e.get("details") or {}).get("purpose") == "sudo"]
    table = ["| situation | broker-client pam-auth | pam_pkcs11 (OpenSC) |", "|---|---|---|"]
    for situation, ours, theirs, said in rows:
        mark = f"refused: `{ours}`" if ours != "granted" else "**granted**"
        peer = "**granted**" if theirs == "granted" else f"refused ({said or 'failure'})"
        table.append(f"| {situation} | {mark} | {peer} |")
    table.append(f"| audit trail of these {len(rows)} attempts | {len(sudo_events)} events in "
                 "the broker's audit log with purpose sudo (challenge issued or refused, "
                 "assertion granted) | none at the broker: local syslog of each machine |")
    if os.environ.get("PAM_PEER_TABLE"):
        Path(os.environ["PAM_PEER_TABLE"]).write_text("\n".join(table) + "\n")
    assert {r[0]: (r[1], r[2]) for r in rows} == EXPECTED, "\n".join(table)
    assert len(sudo_events) >= len(SITUATIONS) - 1
