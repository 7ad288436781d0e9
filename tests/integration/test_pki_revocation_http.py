"""Revocation over real HTTP on loopback: an OCSP responder and a CRL distribution point."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from broker.pki import (
    PkiError,
    RevocationCache,
    RevocationSettings,
    TrustStore,
    issue,
    verify_certificate,
)
from tests.support import dirfile as df

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass
class Responder:
    """What the loopback servers answer; tests change it between calls."""

    issuer: issue.Issued
    signer: issue.Issued | None = None  # None: the issuer signs itself
    status: dict[int, str] = field(default_factory=dict)  # serial → good|revoked|unknown
    crl: bytes = b""
    hits: dict[str, int] = field(default_factory=lambda: {"ocsp": 0, "crl": 0})
    broken: bool = False

    def ocsp_answer(self, body: bytes) -> bytes:
        req = ocsp.load_der_ocsp_request(body)
        state = self.status.get(req.serial_number, "good")
        cert_status = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
                       "unknown": ocsp.OCSPCertStatus.UNKNOWN}[state]
        signer = self.signer or self.issuer
        subject = self.leaves[req.serial_number]
        b = ocsp.OCSPResponseBuilder().add_response(
            cert=subject, issuer=self.issuer.cert, algorithm=hashes.SHA1(),
            cert_status=cert_status, this_update=NOW - dt.timedelta(minutes=1),
            next_update=NOW + dt.timedelta(hours=1),
            revocation_time=NOW - dt.timedelta(hours=1) if state == "revoked" else None,
            revocation_reason=None).responder_id(ocsp.OCSPResponderEncoding.HASH, signer.cert)
        if self.signer is not None:
            b = b.certificates([self.signer.cert])
        return b.sign(signer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    leaves: dict[int, object] = field(default_factory=dict)


def serve(responder: Responder) -> tuple[ThreadingHTTPServer, int]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            responder.hits["crl"] += 1
            self.send_response(200)
            self.end_headers()
            self.wfile.write(responder.crl)

        def do_POST(self) -> None:  # noqa: N802
            responder.hits["ocsp"] += 1
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if responder.broken:
                self.send_response(500)
                self.end_headers()
                return
            data = responder.ocsp_answer(body)
            self.send_response(200)
            self.send_header("content-type", "application/ocsp-response")
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, httpd.server_address[1]


@pytest.fixture
def pki() -> Iterator[tuple[issue.Issued, issue.Issued, Responder, int]]:
    root = issue.make_root("Root")
    responder = Responder(issuer=root)  # placeholder until the intermediate exists
    httpd, port = serve(responder)
    base = f"http://127.0.0.1:{port}"
    inter = issue.make_intermediate(root, "Issuing", crl_url=f"{base}/root.crl")
    responder.issuer = inter
    responder.crl = issue.make_crl(inter, []).public_bytes(serialization.Encoding.DER)
    yield root, inter, responder, port
    httpd.shutdown()


def user(inter: issue.Issued, responder: Responder, port: int, **kw: object) -> issue.Issued:
    u = issue.make_user_cert(inter, "Alice", ocsp_url=f"http://127.0.0.1:{port}/ocsp",
                             crl_url=f"http://127.0.0.1:{port}/issuing.crl", **kw)
    responder.leaves[u.cert.serial_number] = u.cert
    return u


def verify(root, inter, u, **kw):  # type: ignore[no-untyped-def]
    # The root's CRL is uploaded (a good one) so only the leaf's status is in question.
    store = TrustStore([root.cert], [inter.cert], [issue.make_crl(root, [])])
    return verify_certificate(u.cert_der(), [], store, **kw)


OCSP_HARD = RevocationSettings(crl=False, ocsp=True, fail_mode="hard")


def test_ocsp_good(pki) -> None:  # type: ignore[no-untyped-def]
    root, inter, responder, port = pki
    r = verify(root, inter, user(inter, responder, port), revocation=OCSP_HARD)
    assert r.revocation_status == "good"


@pytest.mark.parametrize("state,code", [("revoked", "certificate_revoked"),
                                        ("unknown", "certificate_revocation_unknown")])
def test_ocsp_revoked_and_unknown(pki, state, code) -> None:  # type: ignore[no-untyped-def]
    root, inter, responder, port = pki
    u = user(inter, responder, port)
    responder.status[u.cert.serial_number] = state
    with pytest.raises(PkiError) as err:
        verify(root, inter, u, revocation=OCSP_HARD)
    assert err.value.code == code


def test_delegated_responder_is_accepted(pki) -> None:  # type: ignore[no-untyped-def]
    root, inter, responder, port = pki
    responder.signer = issue.make_ocsp_signer(inter)
    assert verify(root, inter, user(inter, responder, port),
                  revocation=OCSP_HARD).revocation_status == "good"


def test_unauthorised_responder_is_refused(pki) -> None:  # type: ignore[no-untyped-def]
    root, inter, responder, port = pki
    stranger_ca = issue.make_root("Stranger")
    responder.signer = issue.make_ocsp_signer(stranger_ca)
    with pytest.raises(PkiError) as err:
        verify(root, inter, user(inter, responder, port), revocation=OCSP_HARD)
    assert err.value.code == "certificate_revocation_unknown"


def test_responder_answer_is_cached_until_next_update(pki) -> None:  # type: ignore[no-untyped-def]
    root, inter, responder, port = pki
    u = user(inter, responder, port)
    cache = RevocationCache()
    verify(root, inter, u, revocation=OCSP_HARD, cache=cache)
    verify(root, inter, u, revocation=OCSP_HARD, cache=cache)
    assert responder.hits["ocsp"] == 1


def test_unreachable_ocsp_soft_allows_and_reports_hard_refuses(pki) -> None:  # type: ignore[no-untyped-def]
    root, inter, responder, port = pki
    u = user(inter, responder, port)
    responder.broken = True
    soft = verify(root, inter, u, revocation=RevocationSettings(crl=False, ocsp=True,
                                                                fail_mode="soft"))
    assert soft.revocation_status == "soft_fail" and soft.soft_fail_reasons
    with pytest.raises(PkiError) as err:
        verify(root, inter, u, revocation=OCSP_HARD)
    assert err.value.code == "certificate_revocation_unknown"


def test_closed_port_is_unreachable(pki) -> None:  # type: ignore[no-untyped-def]
    from tests.support.server import free_port

    root, inter, responder, _ = pki
    u = user(inter, responder, free_port())
    with pytest.raises(PkiError) as err:
        verify(root, inter, u, revocation=OCSP_HARD)
    assert err.value.code == "certificate_revocation_unknown"


def test_crl_is_fetched_from_the_distribution_point_and_cached(pki) -> None:  # type: ignore[no-untyped-def]
    root, inter, responder, port = pki
    u = user(inter, responder, port)
    cache = RevocationCache()
    hard_crl = RevocationSettings(crl=True, ocsp=False, fail_mode="hard")
    assert verify(root, inter, u, revocation=hard_crl, cache=cache).revocation_status == "good"
    verify(root, inter, u, revocation=hard_crl, cache=cache)
    assert responder.hits["crl"] == 1, "the CRL is reused until its nextUpdate"


def test_crl_from_distribution_point_revokes(pki) -> None:  # type: ignore[no-untyped-def]
    root, inter, responder, port = pki
    u = user(inter, responder, port)
    responder.crl = issue.make_crl(inter, [u.cert.serial_number]).public_bytes(
        serialization.Encoding.DER)
    with pytest.raises(PkiError) as err:
        verify(root, inter, u, revocation=RevocationSettings(crl=True, fail_mode="hard"))
    assert err.value.code == "certificate_revoked"


def test_ocsp_cleared_leaf_needs_no_crl_when_only_its_ca_falls_back_to_crls(pki) -> None:  # type: ignore[no-untyped-def]
    """OCSP on, CRLs off: the issuing CA names no responder and is checked against the root's
    CRL; the user certificate, cleared by OCSP and carrying no CRL distribution point, must not
    be failed for lacking a CRL."""
    root, inter, responder, port = pki
    u = issue.make_user_cert(inter, "Alice", ocsp_url=f"http://127.0.0.1:{port}/ocsp")
    responder.leaves[u.cert.serial_number] = u.cert
    assert verify(root, inter, u, revocation=OCSP_HARD).revocation_status == "good"


OCSP_DIRECTORY = df.directory(
    "ocsp", "OCSP checked", smart_card={"pre_session": True, "in_session": True},
    revocation={"crl": False, "ocsp": True, "fail_mode": "hard"}, trust_anchors=["root.pem"],
    intermediates=["issuing.pem"], crls=["root.crl.pem"], certmap=["upn"],
    users=[df.user("alice"), df.user("rita")],
    workspaces=[df.workspace("alice"), df.workspace("rita")])


def test_ocsp_decides_logins_through_a_running_broker(pki, broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The loopback OCSP responder is asked by the broker itself: good logs in, revoked is
    refused, and a dead responder under hard-fail is revocation_unknown."""
    import json

    from tests.support.softcard import SoftCard, SoftClient

    root, inter, responder, port = pki
    alice = user(inter, responder, port, upn="alice@corp.example")
    rita = issue.make_user_cert(inter, "Rita", upn="rita@corp.example",
                                ocsp_url=f"http://127.0.0.1:{port}/ocsp")
    responder.leaves[rita.cert.serial_number] = rita.cert
    responder.status[rita.cert.serial_number] = "revoked"
    (tmp_path / "root.pem").write_bytes(root.cert_pem())
    (tmp_path / "issuing.pem").write_bytes(inter.cert_pem())
    (tmp_path / "root.crl.pem").write_bytes(
        issue.make_crl(root, []).public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ocsp.toml").write_text(OCSP_DIRECTORY)
    out = broker.run_cli("admin", "apply", str(tmp_path / "ocsp.toml"), "--json")
    code = json.loads(out.stdout)["directories"][0]["registration_codes"][0]
    client = SoftClient(broker.client(), code)

    before = responder.hits["ocsp"]
    r = client.login(SoftCard(alice.key, alice.cert, [inter.cert]))
    assert r.status == 200, r.body
    assert responder.hits["ocsp"] > before, "the broker asked the responder"
    r = client.login(SoftCard(rita.key, rita.cert, [inter.cert]))
    assert r.status == 401 and r.code == "certificate_revoked", r.body
    responder.broken = True
    fresh = user(inter, responder, port, upn="alice@corp.example")  # not in any cache
    r = client.login(SoftCard(fresh.key, fresh.cert, [inter.cert]))
    assert r.status == 401 and r.code == "certificate_revocation_unknown", r.body


def _apply_evidence_directory(broker, tmp_path, name, root, intermediates, crls) -> str:  # type: ignore[no-untyped-def]
    """A hard-fail CRL directory ``name`` trusting ``root``, with user vera@<name>.example."""
    import json

    from tests.support import dirfile

    (tmp_path / f"{name}-root.pem").write_bytes(root.cert_pem())
    inter_files, crl_files = [], []
    for i, ca in enumerate(intermediates):
        (tmp_path / f"{name}-ca{i}.pem").write_bytes(ca.cert_pem())
        inter_files.append(f"{name}-ca{i}.pem")
    for i, crl in enumerate(crls):
        (tmp_path / f"{name}-{i}.crl.pem").write_bytes(
            crl.public_bytes(serialization.Encoding.PEM))
        crl_files.append(f"{name}-{i}.crl.pem")
    (tmp_path / f"{name}.toml").write_text(dirfile.directory(
        name, f"{name} CRLs", smart_card={"pre_session": True, "in_session": True},
        revocation={"crl": True, "ocsp": False, "fail_mode": "hard"},
        trust_anchors=[f"{name}-root.pem"], intermediates=inter_files, crls=crl_files,
        certmap=["upn"], users=[dirfile.user("vera", upn=f"vera@{name}.example")],
        workspaces=[dirfile.workspace("vera", id=f"ws-vera-{name}")]))
    out = broker.run_cli("admin", "apply", str(tmp_path / f"{name}.toml"), "--json")
    return str(json.loads(out.stdout)["directories"][0]["registration_codes"][0])


def _audited_revocation(broker, directory: str, outcome: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """The login's revocation evidence as the admin API's audit view shows it."""
    from tests.integration.admin.conftest import make_token

    api = broker.admin(make_token(broker, f"audit-{directory}-{outcome}", "read"))
    r = api.get(f"/admin/v1/audit-events?kind=login.smart_card&directory={directory}")
    assert r.status == 200, r.body
    [event] = [e for e in r.body["items"] if e["outcome"] == outcome]
    return event


def test_login_audit_names_the_base_and_delta_crl(broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Why was this card accepted that day: the audit view names the base CRL and the delta CRL
    that decided, with their numbers and validity, and the root's CRL for the issuing CA."""
    from tests.support.crlsets import delta_pki
    from tests.support.softcard import SoftCard, SoftClient

    p = delta_pki("Deltaco")
    vera = p.user("Vera", upn="vera@deltaco.example")
    code = _apply_evidence_directory(broker, tmp_path, "deltaco", p.root, [p.inter],
                                     [p.base(), p.delta(), p.root_crl])
    r = SoftClient(broker.client(), code).login(SoftCard(vera.key, vera.cert, [p.inter.cert]))
    assert r.status == 200, r.body
    event = _audited_revocation(broker, "deltaco", "success")
    revocation = event["details"]["verification"]["revocation"]
    assert revocation["status"] == "good"
    leaf = [c for c in revocation["checked"]
            if c["certificate"] == vera.cert.subject.rfc4514_string()]
    assert sorted((c["crl_number"], c["delta"]) for c in leaf) == [(5, False), (6, True)]
    assert all(c["crl_issuer"] == p.inter.cert.subject.rfc4514_string()
               and c["this_update"] and c["next_update"] for c in leaf)
    assert [c.get("base_crl_number") for c in leaf if c["delta"]] == [5]
    assert any(c["certificate"] == p.inter.cert.subject.rfc4514_string()
               and c["crl_issuer"] == p.root.cert.subject.rfc4514_string()
               for c in revocation["checked"])


def test_login_audit_names_the_indirect_crl_issuer(broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.crlsets import indirect_pki
    from tests.support.softcard import SoftCard, SoftClient

    p = indirect_pki("Indico")
    vera = p.user("Vera", upn="vera@indico.example")
    code = _apply_evidence_directory(broker, tmp_path, "indico", p.root,
                                     [p.inter, p.crl_issuer], [p.indirect(), p.root_crl])
    r = SoftClient(broker.client(), code).login(SoftCard(vera.key, vera.cert, [p.inter.cert]))
    assert r.status == 200, r.body
    revocation = _audited_revocation(broker, "indico", "success")["details"]["verification"][
        "revocation"]
    [leaf] = [c for c in revocation["checked"]
              if c["certificate"] == vera.cert.subject.rfc4514_string()]
    assert leaf["indirect"] is True and leaf["crl_number"] == 3
    assert leaf["crl_issuer"] == p.crl_issuer.cert.subject.rfc4514_string()
    # A card listed on the indirect CRL is refused, and the refusal is audited too.
    rex = p.user("Rex", upn="vera@indico2.example")
    code2 = _apply_evidence_directory(broker, tmp_path, "indico2", p.root, [p.inter, p.crl_issuer],
                                      [p.indirect([rex.cert.serial_number]), p.root_crl])
    r = SoftClient(broker.client(), code2).login(SoftCard(rex.key, rex.cert, [p.inter.cert]))
    assert r.status == 401 and r.code == "certificate_revoked", r.body
    assert _audited_revocation(broker, "indico2", "refused")["reason"] == "certificate_revoked"
