"""AIA caIssuers: a missing intermediate is fetched over HTTP from a loopback server (bounded,
cached, recorded), only when switched on, and still has to chain to a trust anchor."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import AuthorityInformationAccessOID

from broker.pki import PkiError, RevocationSettings, TrustStore, issue, verify_certificate
from broker.pki.aia import AiaFetcher, http_get

NO_REV = RevocationSettings(crl=False)


class Served:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hits: list[str] = []
        self.trickle: set[str] = set()  # paths answered one byte every 0.2 s


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    served = Served()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            served.hits.append(self.path)
            body = served.files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            if self.path not in served.trickle:
                self.wfile.write(body or b"")
                return
            for i in range(len(body or b"")):
                try:
                    self.wfile.write((body or b"")[i:i + 1])
                    self.wfile.flush()
                except OSError:
                    return  # the client hung up: what a bounded fetch does
                time.sleep(0.2)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()


def _with_aia(url: str) -> tuple[issue.Issued, issue.Issued, issue.Issued]:
    root = issue.make_root("AIA Root")
    inter = issue.make_intermediate(root, "AIA Issuing")
    aia = x509.AuthorityInformationAccess([x509.AccessDescription(
        AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(url))])
    user = issue.make_user_cert(inter, "AIA User", extra_extensions=[(aia, False)])
    return root, inter, user


def test_missing_intermediate_is_fetched_when_switched_on(server) -> None:  # type: ignore[no-untyped-def]
    base, served = server
    root, inter, user = _with_aia(f"{base}/issuing.cer")
    served.files["/issuing.cer"] = inter.cert.public_bytes(serialization.Encoding.DER)
    fetcher = AiaFetcher()
    r = verify_certificate(user.cert_der(), [], TrustStore([root.cert]), revocation=NO_REV,
                           aia_fetch=True, aia=fetcher)
    assert len(r.chain) == 3
    assert r.evidence()["aia_fetches"][0]["url"] == f"{base}/issuing.cer"
    # A second login is answered from the cache.
    verify_certificate(user.cert_der(), [], TrustStore([root.cert]), revocation=NO_REV,
                       aia_fetch=True, aia=fetcher)
    assert served.hits == ["/issuing.cer"] and fetcher.fetches == 1


def test_off_by_default(server) -> None:  # type: ignore[no-untyped-def]
    base, served = server
    root, inter, user = _with_aia(f"{base}/issuing.cer")
    served.files["/issuing.cer"] = inter.cert.public_bytes(serialization.Encoding.DER)
    with pytest.raises(PkiError) as err:
        verify_certificate(user.cert_der(), [], TrustStore([root.cert]), revocation=NO_REV)
    assert err.value.code == "certificate_untrusted" and served.hits == []


def test_fetched_certificate_must_still_chain_to_an_anchor(server) -> None:  # type: ignore[no-untyped-def]
    base, served = server
    root, _, user = _with_aia(f"{base}/issuing.cer")
    impostor_root = issue.make_root("Impostor")
    impostor = issue.make_intermediate(impostor_root, "AIA Issuing")
    served.files["/issuing.cer"] = impostor.cert.public_bytes(serialization.Encoding.DER)
    with pytest.raises(PkiError) as err:
        verify_certificate(user.cert_der(), [], TrustStore([root.cert]), revocation=NO_REV,
                           aia_fetch=True, aia=AiaFetcher())
    assert err.value.code == "certificate_untrusted"


def test_answers_are_bounded_in_size(server) -> None:  # type: ignore[no-untyped-def]
    base, served = server
    root, _, user = _with_aia(f"{base}/big.cer")
    served.files["/big.cer"] = b"0" * 4096
    fetcher = AiaFetcher(max_bytes=1024)
    with pytest.raises(PkiError) as err:
        verify_certificate(user.cert_der(), [], TrustStore([root.cert]), revocation=NO_REV,
                           aia_fetch=True, aia=fetcher)
    assert "larger than 1024" in err.value.details["aia_fetches"][0]["error"]


def test_a_trickling_server_is_cut_at_the_deadline(server) -> None:  # type: ignore[no-untyped-def]
    """One byte every 0.2 s never trips a per-read timeout of 1 s; the fetch as a whole must
    still end at 1 s, refused and recorded, long before the ~100 s the answer would take."""
    base, served = server
    root, inter, user = _with_aia(f"{base}/slow.cer")
    served.files["/slow.cer"] = inter.cert.public_bytes(serialization.Encoding.DER)
    served.trickle.add("/slow.cer")
    fetcher = AiaFetcher(timeout_s=1.0)
    start = time.monotonic()
    with pytest.raises(PkiError) as err:
        verify_certificate(user.cert_der(), [], TrustStore([root.cert]), revocation=NO_REV,
                           aia_fetch=True, aia=fetcher)
    print(f"the trickling fetch held the verification for {time.monotonic() - start:.1f} s")
    assert err.value.code == "certificate_untrusted"
    [record] = err.value.details["aia_fetches"]
    # The whole-exchange deadline cut it (a per-read timeout never fires at a byte per 0.2 s):
    assert "no complete answer within 1 s" in record["error"]
    assert fetcher.fetches == 0  # nothing half-read was cached


def test_a_verification_spends_at_most_the_aia_budget(server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Several trickling caIssuers URLs share one budget: the second gets only what is left."""
    import broker.pki.chain as chain_module

    base, served = server
    root = issue.make_root("AIA Root")
    inter = issue.make_intermediate(root, "AIA Issuing")
    aia = x509.AuthorityInformationAccess([x509.AccessDescription(
        AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(
            f"{base}/slow{i}.cer")) for i in range(3)])
    user = issue.make_user_cert(inter, "AIA User", extra_extensions=[(aia, False)])
    for i in range(3):
        served.files[f"/slow{i}.cer"] = inter.cert.public_bytes(serialization.Encoding.DER)
        served.trickle.add(f"/slow{i}.cer")
    monkeypatch.setattr(chain_module, "AIA_BUDGET_S", 1.5)
    start = time.monotonic()
    with pytest.raises(PkiError) as err:
        verify_certificate(user.cert_der(), [], TrustStore([root.cert]), revocation=NO_REV,
                           aia_fetch=True, aia=AiaFetcher(timeout_s=1.0))
    print(f"three trickling URLs held the verification for {time.monotonic() - start:.1f} s")
    errors = [r["error"] for r in err.value.details["aia_fetches"]]
    assert len(errors) == 3 and "budget is spent" in errors[-1]
    assert served.hits.count("/slow2.cer") == 0, "the spent budget fetches nothing more"


def test_only_plain_http_is_fetched() -> None:
    from broker.pki.aia import AiaFetchError

    with pytest.raises(AiaFetchError):
        http_get("ldap://dir.example.gov/cn=CA?cACertificate", 1.0, 1024)
    with pytest.raises(AiaFetchError):
        http_get("file:///etc/passwd", 1.0, 1024)
