"""The admin console on an LDAP-backed directory, over real HTTP against a running broker and
the session's real OpenLDAP slapd: the directory page's "Test a certificate" form (the same
service function as ``broker admin directories test-lookup``) and the users page read through
the directory (one bounded paged search, a note when the server holds more)."""

from __future__ import annotations

import html as htmlmod
import http.client
import re
import ssl
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from broker.pki import issue
from tests.integration.admin.conftest import make_token
from tests.integration.admin.test_console_http import Browserish
from tests.support.ldapserver import Slapd
from tests.support.server import BrokerProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def bp(broker_factory: Any, tmp_path: Path) -> BrokerProcess:
    made: BrokerProcess = broker_factory(f"sqlite:///{tmp_path / 'console.db'}")
    return made


def _ldap_directory(bp: BrokerProcess, token: str, slapd: Slapd, tmp_path: Path, tag: str
                    ) -> str:
    """Its own subtree of the shared slapd (so what is listed is this test's only)."""
    base = f"ou=c{tag},ou=people,{slapd.base_dn}"
    slapd.add(base, {"objectClass": "organizationalUnit", "ou": f"c{tag}"})
    secret = slapd.write_secret(tmp_path / "ldap.secret")
    got = bp.admin(token).post("/admin/v1/directories", {
        "id": f"l{tag}", "name": "LDAP", "region": "us-gov-west-1",
        "certmap": ["email", "certificate"],
        "ldap": {"url": slapd.ldaps_url, "ca_file": str(slapd.ca_file), "flavour": "generic",
                 "base_dn": base, "bind_dn": slapd.svc_dn,
                 "bind_password_file": str(secret)}})
    assert got.status == 201, got.body
    return base


def _person(slapd: Slapd, base: str, uid: str, **attrs: Any) -> str:
    dn = f"uid={uid},{base}"
    slapd.add(dn, {"objectClass": ["inetOrgPerson"], "uid": uid, "cn": uid, "sn": uid,
                   **attrs})
    return dn


def _text(page: str, ident: str) -> str:
    got = re.search(rf'id="{ident}">([^<]*)<', page)
    assert got, (ident, page[-3000:])
    return htmlmod.unescape(got.group(1))


def _post_file(b: Browserish, path: str, fields: dict[str, str], name: str, blob: bytes,
               filename: str = "card.pem") -> tuple[int, str]:
    """A multipart/form-data POST with one file, as a browser's file input sends it."""
    boundary = "----test" + uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
             .encode() for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                 f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                 .encode() + blob + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    ctx = ssl.create_default_context(cafile=str(b.bp.cafile))
    conn = http.client.HTTPSConnection("127.0.0.1", b.bp.admin_port, context=ctx, timeout=30)
    try:
        conn.request("POST", path, body=body, headers={
            "content-type": f"multipart/form-data; boundary={boundary}",
            "cookie": "; ".join(f"{k}={v}" for k, v in b.cookies.items())})
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def test_the_directory_page_tests_a_certificate_as_a_login_would(
        bp: BrokerProcess, slapd: Slapd, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    writer = make_token(bp, "root")
    base = _ldap_directory(bp, writer, slapd, tmp_path, tag)
    root = issue.make_root("Corp Root CA")
    inter = issue.make_intermediate(root, "Corp Issuing CA")
    lena = issue.make_user_cert(inter, "Lena", email=f"lena-{tag}@corp.example")
    twin = issue.make_user_cert(inter, "Twin", email=f"twin-{tag}@corp.example")
    star = issue.make_user_cert(inter, "Star", email="*@corp.example")
    ivan = issue.make_user_cert(inter, "Ivan")  # no email: the exact certificate
    ivan_der = ivan.cert.public_bytes(serialization.Encoding.DER)
    lena_dn = _person(slapd, base, f"lena-{tag}", mail=f"lena-{tag}@corp.example")
    twins = [_person(slapd, base, f"twin{i}-{tag}", mail=f"twin-{tag}@corp.example")
             for i in (1, 2)]
    ivan_dn = _person(slapd, base, f"ivan-{tag}", **{"userCertificate;binary": ivan_der})

    # A read-scope session may test (it changes nothing); the form is on the directory page.
    b = Browserish(bp)
    b.sign_in(make_token(bp, "auditor", "read"))
    status, _, _, page = b.request("GET", "/console/directories")
    assert status == 200 and 'id="test-lookup-form"' in page
    assert re.search(rf"<option[^>]*>l{tag}</option>", page)
    csrf = b.csrf(page)

    def test(cert: issue.Issued) -> tuple[int, str]:
        status, _, _, got = b.request("POST", "/console/directories/test-lookup", {
            "csrf": csrf, "directory_id": f"l{tag}", "certificate": cert.cert_pem().decode()})
        return status, got

    status, got = test(lena)
    assert status == 200, got[-2000:]
    assert (_text(got, "lookup-user"), _text(got, "lookup-rule"), _text(got, "lookup-dn")) == \
        (f"lena-{tag}", "email", lena_dn)
    status, got = test(twin)
    assert status == 200 and _text(got, "lookup-code") == "user_ambiguous"
    assert all(dn in htmlmod.unescape(got) for dn in twins)
    status, got = test(star)  # RFC 4515: the * is a character, not a wildcard
    assert status == 200 and _text(got, "lookup-code") == "user_not_found"
    assert "lookup-user" not in got
    # A PEM file, uploaded: mapped by the exact certificate.
    status, got = _post_file(b, "/console/directories/test-lookup",
                             {"csrf": csrf, "directory_id": f"l{tag}"}, "certificate__file",
                             ivan.cert_pem())
    assert status == 200, got[-2000:]
    assert (_text(got, "lookup-user"), _text(got, "lookup-rule"), _text(got, "lookup-dn")) == \
        (f"ivan-{tag}", "certificate", ivan_dn)
    # Not a certificate, nothing at all, no CSRF token: refused with a sentence.
    status, _, _, got = b.request("POST", "/console/directories/test-lookup", {
        "csrf": csrf, "directory_id": f"l{tag}", "certificate": "-----BEGIN junk"})
    assert status == 200 and _text(got, "lookup-code") == "certificate_malformed"
    status, _, _, got = b.request("POST", "/console/directories/test-lookup", {
        "csrf": csrf, "directory_id": f"l{tag}"})
    assert status == 400 and "Paste a certificate" in got and "PEM or DER" in got
    status, _, _, got = b.request("POST", "/console/directories/test-lookup", {
        "directory_id": f"l{tag}", "certificate": lena.cert_pem().decode()})
    assert status == 403 and "CSRF" in got
    # The CLI says the same.
    pem = tmp_path / "lena.pem"
    pem.write_bytes(lena.cert_pem())
    out = bp.run_cli("admin", "directories", "test-lookup", f"l{tag}", "--certificate",
                     str(pem))
    assert f"lena-{tag} (rule email, entry {lena_dn})" in out.stdout
    assert slapd.svc_password not in bp.logs()


def _selected_in_form(page: str) -> list[str]:
    form = page[page.index('id="test-lookup-form"'):]
    form = form[:form.index("</form>")]
    return re.findall(r"<option selected>([^<]*)</option>", form)


def test_the_test_form_starts_at_the_selected_directory_and_takes_a_der_file(
        bp: BrokerProcess, slapd: Slapd, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    writer = make_token(bp, "root")
    base = _ldap_directory(bp, writer, slapd, tmp_path, tag)
    # A local directory that sorts first: without a selection the form would start there.
    assert bp.admin(writer).post("/admin/v1/directories", {
        "id": f"a{tag}", "name": "Local", "region": "us-gov-west-1"}).status == 201
    ivan = issue.make_user_cert(issue.make_root("Corp Root CA"), "Ivan")
    ivan_der = ivan.cert.public_bytes(serialization.Encoding.DER)
    ivan_dn = _person(slapd, base, f"ivan-{tag}", **{"userCertificate;binary": ivan_der})

    b = Browserish(bp)
    b.sign_in(make_token(bp, "auditor", "read"))
    status, _, _, page = b.request("GET", f"/console/directories?directory_id=a{tag}")
    assert status == 200 and _selected_in_form(page) == [f"a{tag}"]
    status, _, _, page = b.request("GET", f"/console/directories?directory_id=l{tag}")
    assert _selected_in_form(page) == [f"l{tag}"]
    status, _, _, page = b.request("GET", "/console/directories")  # the session remembers
    assert _selected_in_form(page) == [f"l{tag}"]
    csrf = b.csrf(page)

    # A DER file, and no directory in the form: the selected one.
    status, got = _post_file(b, "/console/directories/test-lookup", {"csrf": csrf},
                             "certificate__file", ivan_der, "ivan.cer")
    assert status == 200, got[-2000:]
    assert (_text(got, "lookup-user"), _text(got, "lookup-rule"), _text(got, "lookup-dn")) == \
        (f"ivan-{tag}", "certificate", ivan_dn)
    assert _selected_in_form(got) == [f"l{tag}"]
    # Testing in another directory selects it (the header and the form agree).
    status, got = _post_file(b, "/console/directories/test-lookup",
                             {"csrf": csrf, "directory_id": f"a{tag}"}, "certificate__file",
                             ivan_der, "ivan.der")
    assert status == 200 and _text(got, "lookup-code") == "user_not_found"
    status, _, _, page = b.request("GET", "/console/directories")
    assert _selected_in_form(page) == [f"a{tag}"]
    # A file that is neither PEM nor DER: refused with a sentence.
    status, got = _post_file(b, "/console/directories/test-lookup",
                             {"csrf": csrf, "directory_id": f"l{tag}"}, "certificate__file",
                             b"\x30\x03junk", "junk.der")
    assert status == 200 and _text(got, "lookup-code") == "certificate_malformed"


def test_the_users_page_reads_through_the_directory_bounded(
        bp: BrokerProcess, slapd: Slapd, tmp_path: Path) -> None:
    import ldap.modlist

    from broker.service.ldapdir import BROWSE_LIMIT

    tag = uuid.uuid4().hex[:8]
    token = make_token(bp, "root")
    base = _ldap_directory(bp, token, slapd, tmp_path, tag)
    _person(slapd, base, f"amy-{tag}", mail=f"amy-{tag}@corp.example",
            userPassword="amy's password")
    b = Browserish(bp)
    b.sign_in(token)
    status, _, _, page = b.request("GET", f"/console/users?directory_id=l{tag}")
    assert status == 200, page[-2000:]
    names = re.findall(r'<td data-column="ldap-username">([^<]*)<', page)
    assert names == [f"amy-{tag}"]
    assert f"uid=amy-{tag},{base}" in page and f"amy-{tag}@corp.example" in page
    assert 'id="ldap-users-truncated"' not in page
    for secret in (slapd.svc_password, "amy's password"):
        assert htmlmod.escape(secret) not in page and secret not in page

    # More entries than a page holds: the first BROWSE_LIMIT, and a note saying so.
    conn = slapd.admin()
    try:
        for i in range(BROWSE_LIMIT + 5):
            uid = f"u{i:03d}-{tag}"
            conn.add_s(f"uid={uid},{base}", ldap.modlist.addModlist({
                "objectClass": [b"inetOrgPerson"], "uid": [uid.encode()],
                "cn": [uid.encode()], "sn": [uid.encode()]}))
    finally:
        conn.unbind_s()
    status, _, _, page = b.request("GET", f"/console/users?directory_id=l{tag}")
    assert status == 200
    assert len(re.findall(r'data-column="ldap-username"', page)) == BROWSE_LIMIT
    assert 'id="ldap-users-truncated"' in page and f"first {BROWSE_LIMIT} entries" in page
    # The search box narrows it (escaped: a * typed is a character, not a wildcard).
    status, _, _, page = b.request("GET", f"/console/users?directory_id=l{tag}&search=u10")
    assert re.findall(r'<td data-column="ldap-username">([^<]*)<', page) == \
        [f"u{i}-{tag}" for i in range(100, BROWSE_LIMIT + 5)]
    assert 'id="ldap-users-truncated"' not in page
    status, _, _, page = b.request("GET", f"/console/users?directory_id=l{tag}&search=*")
    assert 'data-column="ldap-username"' not in page and "No entry matches" in page

    # No server there: the page still answers, saying why (no traceback, no secret).
    from tests.support.server import free_port

    assert bp.admin(token).request("PATCH", f"/admin/v1/directories/l{tag}", {"ldap": {
        "url": f"ldap://127.0.0.1:{free_port()}", "timeout_s": 2}}).status == 200
    status, _, _, page = b.request("GET", f"/console/users?directory_id=l{tag}")
    assert status == 200 and 'id="ldap-users-problem"' in page
    assert "directory" in _text(page, "ldap-users-problem").lower()
    assert slapd.svc_password not in bp.logs()
