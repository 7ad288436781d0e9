"""AIA caIssuers through a real login (issue 13, item 6): off by default, switched on per
directory, the missing intermediate fetched from a loopback HTTP server, and every fetch in the
login's audit event, accepted or refused."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import AuthorityInformationAccessOID

from broker.pki import issue
from tests.integration.admin.conftest import make_token
from tests.support import dirfile
from tests.support.httpfiles import file_server
from tests.support.softcard import SoftCard, SoftClient


@pytest.fixture
def ca_issuers() -> Iterator[tuple[str, dict[str, bytes], list[str]]]:
    with file_server() as served:
        yield served


def _apply(broker, tmp_path, name: str, root: issue.Issued, aia: bool) -> str:  # type: ignore[no-untyped-def]
    (tmp_path / f"{name}-root.pem").write_bytes(root.cert_pem())
    (tmp_path / f"{name}.toml").write_text(dirfile.directory(
        name, f"{name} AIA", smart_card={"pre_session": True, "in_session": True},
        revocation={"crl": False}, trust_anchors=[f"{name}-root.pem"], certmap=["upn"],
        aia_fetch=aia, users=[dirfile.user("ada", upn=f"ada@{name}.example")],
        workspaces=[dirfile.workspace("ada", id=f"ws-ada-{name}")]))
    out = broker.run_cli("admin", "apply", str(tmp_path / f"{name}.toml"), "--json")
    return str(json.loads(out.stdout)["directories"][0]["registration_codes"][0])


def _card(inter: issue.Issued, url: str, upn: str) -> SoftCard:
    aia = x509.AuthorityInformationAccess([x509.AccessDescription(
        AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(url))])
    user = issue.make_user_cert(inter, "Ada", upn=upn, extra_extensions=[(aia, False)])
    return SoftCard(user.key, user.cert, [])  # the card sends no intermediate


def _events(broker, name: str) -> list[dict]:  # type: ignore[type-arg,no-untyped-def]
    api = broker.admin(make_token(broker, f"aia-{name}", "read"))
    r = api.get(f"/admin/v1/audit-events?kind=login.smart_card&directory={name}")
    assert r.status == 200, r.body
    return list(r.body["items"])


def test_missing_intermediate_is_fetched_only_where_switched_on(broker, tmp_path,  # type: ignore[no-untyped-def]
                                                                ca_issuers) -> None:
    base, files, hits = ca_issuers
    root = issue.make_root("AIA Login Root")
    inter = issue.make_intermediate(root, "AIA Login Issuing")
    files["/issuing.cer"] = inter.cert.public_bytes(serialization.Encoding.DER)

    off = _apply(broker, tmp_path, "aiaoff", root, aia=False)
    r = SoftClient(broker.client(), off).login(
        _card(inter, f"{base}/issuing.cer", "ada@aiaoff.example"))
    assert r.status == 401 and r.code == "certificate_untrusted", r.body
    assert hits == [], "a directory without aia_fetch must not fetch"

    on = _apply(broker, tmp_path, "aiaon", root, aia=True)
    r = SoftClient(broker.client(), on).login(
        _card(inter, f"{base}/issuing.cer", "ada@aiaon.example"))
    assert r.status == 200, r.body
    assert hits == ["/issuing.cer"]
    [event] = _events(broker, "aiaon")
    [fetch] = event["details"]["verification"]["aia_fetches"]
    assert fetch["url"] == f"{base}/issuing.cer" and fetch["certificates"] == 1


def test_a_failed_fetch_is_audited_with_the_refusal(broker, tmp_path, ca_issuers) -> None:  # type: ignore[no-untyped-def]
    base, _files, _hits = ca_issuers
    root = issue.make_root("AIA Missing Root")
    inter = issue.make_intermediate(root, "AIA Missing Issuing")
    code = _apply(broker, tmp_path, "aiamiss", root, aia=True)
    r = SoftClient(broker.client(), code).login(
        _card(inter, f"{base}/nothing-here.cer", "ada@aiamiss.example"))
    assert r.status == 401 and r.code == "certificate_untrusted", r.body
    [event] = _events(broker, "aiamiss")
    assert event["outcome"] == "refused"
    [fetch] = event["details"]["verification"]["aia_fetches"]
    assert fetch["url"] == f"{base}/nothing-here.cer" and "HTTP 404" in fetch["error"]
