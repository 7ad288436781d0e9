"""Clients nobody here wrote use the virtual cards through OpenSC's PKCS#11 module.

- NSS's own ``tstclnt`` (libnss3-tools), after ``broker-client nss-setup``, authenticates to an
  nginx (nginx-light) that requires client certificates: the NSS + OpenSC path Firefox and Chrome
  take on Linux. A wrong PIN is refused and the card's counter goes down by one.
- OpenSSL through libp11's PKCS#11 engine (libengine-pkcs11-openssl) signs with the card, and
  curl presents the card's key through that engine to the same nginx.

Every server listens on 127.0.0.1 only; every subprocess has a timeout.
"""

from __future__ import annotations

import glob
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

from broker.cardsim import CacCard, KeySlot, PivCard
from broker.cardsim.vpcd import VpcdLink
from broker.pki import issue
from tests.support.require import unavailable
from tests.support.server import free_port

pytestmark = pytest.mark.pcsc

MESSAGE = b"signed by a client nobody here wrote"


def find_pkcs11_engine() -> str | None:
    """libp11's engine: in OpenSSL's ENGINESDIR (Debian: /usr/lib/<triplet>/engines-3)."""
    dirs: list[str] = []
    try:
        out = subprocess.run(["openssl", "version", "-e"], capture_output=True, text=True,
                             timeout=30).stdout  # ENGINESDIR: "/usr/lib/x86_64-linux-gnu/…"
        if '"' in out:
            dirs.append(out.split('"')[1])
    except OSError:
        pass
    dirs += sorted(glob.glob("/usr/lib/*-linux-gnu/engines-*")) + sorted(
        glob.glob("/usr/lib*/engines-*"))
    return next((os.path.join(d, name) for d in dirs for name in ("pkcs11.so", "libpkcs11.so")
                 if os.path.exists(os.path.join(d, name))), None)


ENGINE = find_pkcs11_engine()


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Nginx:
    port: int
    proc: subprocess.Popen[bytes]
    folder: Path

    def log(self) -> str:
        p = self.folder / "error.log"
        return p.read_text(errors="replace") if p.exists() else ""


@pytest.fixture(scope="module")
def demo_pki() -> issue.DemoPki:
    return issue.make_demo_pki(key_kind="ec-p256")


@pytest.fixture
def nginx(tmp_path: Path, demo_pki: issue.DemoPki) -> Iterator[Nginx]:
    """nginx on a loopback port: TLS, client certificate required, issued by the demo CA."""
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(exe):
        unavailable("nginx", "nginx is not installed (apt-get install nginx-light)")
    folder = tmp_path / "nginx"
    folder.mkdir()
    server = issue.make_user_cert(demo_pki.intermediate, "localhost", eku=("server-auth",))
    (folder / "server.pem").write_bytes(pem(server.cert) + pem(demo_pki.intermediate.cert))
    (folder / "server.key").write_bytes(server.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (folder / "clients.pem").write_bytes(pem(demo_pki.root.cert)
                                         + pem(demo_pki.intermediate.cert))
    port = free_port()
    (folder / "nginx.conf").write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {folder}/server.pem;
        ssl_certificate_key {folder}/server.key;
        ssl_client_certificate {folder}/clients.pem;
        ssl_verify_client on;
        ssl_verify_depth 3;
        location / {{
            default_type text/plain;
            return 200 "client=$ssl_client_s_dn verify=$ssl_client_verify\\n";
        }}
    }}
}}
""")
    proc = subprocess.Popen([exe, "-c", str(folder / "nginx.conf"), "-p", str(folder),
                             "-e", str(folder / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    ng = Nginx(port, proc, folder)
    deadline = time.monotonic() + 10
    import socket

    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("nginx did not start:\n" + ng.log())
            time.sleep(0.1)
    yield ng
    proc.send_signal(signal.SIGQUIT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(args: list[str], *, env: dict[str, str] | None = None, input: bytes | None = None,
        timeout: float = 60, done_when: tuple[bytes, ...] = ()
        ) -> subprocess.CompletedProcess[str]:
    """Run a tool to its end, or (``done_when``) until its output holds one of those markers
    and a line end: tstclnt lingers once the exchange is over, so it is stopped then. A tool still
    running at ``timeout`` fails the test."""
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    if input:
        proc.stdin.write(input)
    proc.stdin.close()
    out, err = b"", b""
    deadline = time.monotonic() + timeout
    streams = [proc.stdout, proc.stderr]
    while streams:
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{args[0]} hung:\n{out!r}\n{err!r}")
        ready, _, _ = select.select(streams, [], [], 0.2)
        for stream in ready:
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                streams.remove(stream)
            elif stream is proc.stdout:
                out += chunk
            else:
                err += chunk
        if any(m in out + err for m in done_when) and (out + err).endswith(b"\n"):
            proc.terminate()
            break
    code = proc.wait(10)
    return subprocess.CompletedProcess(args, code, out.decode(errors="replace"),
                                       err.decode(errors="replace"))


# --------------------------------------------------------------------------- NSS tstclnt

@pytest.fixture
def nss_home(tmp_path: Path) -> dict[str, str]:
    """A scratch HOME whose NSS database has OpenSC registered by ``broker-client nss-setup``."""
    if shutil.which("tstclnt") is None:
        unavailable("nss", "tstclnt is not installed (apt-get install libnss3-tools)")
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home))
    proc = run([sys.executable, "-c", "from broker.client.cli import main; main()", "nss-setup"],
               env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return env


def nickname(env: dict[str, str]) -> str:
    """The card certificate's NSS nickname (``<token label>:<object label>``)."""
    db = f"sql:{env['HOME']}/.pki/nssdb"
    out = run(["certutil", "-L", "-d", db, "-h", "all"], env=env).stdout
    for line in out.splitlines():
        if "Certificate for PIV Authentication" in line or "CAC ID Certificate" in line:
            # certutil pads the nickname with spaces before the trust flags column
            return line.rsplit("  ", 1)[0].strip() if "  " in line else line.strip()
    pytest.fail("certutil does not list the card's certificate:\n" + out)


def tstclnt(env: dict[str, str], port: int, pin: str, tmp_path: Path
            ) -> subprocess.CompletedProcess[str]:
    pinfile = tmp_path / "pin.txt"
    pinfile.write_text(pin + "\n")
    pinfile.chmod(0o600)
    return run(["tstclnt", "-h", "127.0.0.1", "-p", str(nginx_port := port), "-d",
                f"sql:{env['HOME']}/.pki/nssdb", "-n", nickname(env), "-W", str(pinfile), "-o"],
               env=env, input=f"GET / HTTP/1.0\r\nHost: 127.0.0.1:{nginx_port}\r\n\r\n".encode(),
               timeout=60,
               done_when=(b"verify=", b"Failed to load a suitable client certificate"))


def piv_card(demo_pki: issue.DemoPki) -> PivCard:
    return PivCard(demo_pki.user.key, demo_pki.user.cert)


def test_nss_tstclnt_authenticates_with_the_piv_card_to_nginx(
        vpcd_card: Callable[..., VpcdLink], nginx: Nginx, nss_home: dict[str, str],
        demo_pki: issue.DemoPki, tmp_path: Path) -> None:
    card = piv_card(demo_pki)
    vpcd_card(card)
    proc = tstclnt(nss_home, nginx.port, "123456", tmp_path)
    assert "200 OK" in proc.stdout, proc.stdout + proc.stderr + nginx.log()
    assert "CN=demo.user" in proc.stdout and "verify=SUCCESS" in proc.stdout
    assert card.pin.remaining == 3
    assert card.stats.apdus > 0


def test_nss_tstclnt_with_a_wrong_pin_is_refused_and_counts_down(
        vpcd_card: Callable[..., VpcdLink], nginx: Nginx, nss_home: dict[str, str],
        demo_pki: issue.DemoPki, tmp_path: Path) -> None:
    """tstclnt's -W callback hands NSS the same PIN on each of NSS's three login tries: a wrong
    PIN in the file costs three attempts (a standard 3-try PIV card blocks). Each try is refused
    by the card and counts down by one; the right PIN afterwards resets the counter."""
    card = PivCard(demo_pki.user.key, demo_pki.user.cert, pin_tries=5)
    seen: list[int] = []
    check = card.pin.check

    def counting_check(candidate: bytes) -> bool:
        ok = check(candidate)
        seen.append(card.pin.remaining)
        return ok

    card.pin.check = counting_check  # type: ignore[method-assign]
    vpcd_card(card)
    proc = tstclnt(nss_home, nginx.port, "999999", tmp_path)
    assert "200 OK" not in proc.stdout and "verify=SUCCESS" not in proc.stdout
    assert seen == [4, 3, 2], seen
    seen.clear()
    proc = tstclnt(nss_home, nginx.port, "123456", tmp_path)
    assert "verify=SUCCESS" in proc.stdout, proc.stdout + proc.stderr
    assert seen == [5], "the right PIN resets the counter"


# --------------------------------------------------------------------------- OpenSSL engine

@pytest.fixture
def engine_env(tmp_path: Path, pkcs11_module: str) -> dict[str, str]:
    """OPENSSL_CONF loading libp11's pkcs11 engine with OpenSC's module."""
    if ENGINE is None:
        unavailable("opensc", "libp11's OpenSSL engine is not installed "
                    "(apt-get install libengine-pkcs11-openssl)")
    conf = tmp_path / "openssl-pkcs11.cnf"
    conf.write_text(f"""openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = {ENGINE}
MODULE_PATH = {pkcs11_module}
init = 0
""")
    return dict(os.environ, OPENSSL_CONF=str(conf))


def engine_sign(env: dict[str, str], key_id: str, digest: bytes, tmp_path: Path,
                pin: str = "123456") -> subprocess.CompletedProcess[str]:
    (tmp_path / "digest").write_bytes(digest)
    return run(["openssl", "pkeyutl", "-engine", "pkcs11", "-keyform", "engine", "-sign",
                "-inkey", f"pkcs11:id=%{key_id};type=private;pin-value={pin}",
                "-in", str(tmp_path / "digest"), "-out", str(tmp_path / "sig")], env=env)


def test_openssl_signs_with_the_piv_card_through_the_pkcs11_engine(
        vpcd_card: Callable[..., VpcdLink], engine_env: dict[str, str],
        demo_pki: issue.DemoPki, tmp_path: Path) -> None:
    card = piv_card(demo_pki)
    vpcd_card(card)
    h = hashes.Hash(hashes.SHA256())
    h.update(MESSAGE)
    digest = h.finalize()
    proc = engine_sign(engine_env, "01", digest, tmp_path)  # OpenSC's id for the 9A key
    assert proc.returncode == 0, proc.stdout + proc.stderr
    demo_pki.user.cert.public_key().verify(  # type: ignore[call-arg]
        (tmp_path / "sig").read_bytes(), digest,
        ec.ECDSA(utils.Prehashed(hashes.SHA256())))  # type: ignore[arg-type]


def test_curl_presents_the_piv_key_through_the_engine_to_nginx(
        vpcd_card: Callable[..., VpcdLink], engine_env: dict[str, str], nginx: Nginx,
        demo_pki: issue.DemoPki, tmp_path: Path) -> None:
    card = piv_card(demo_pki)
    vpcd_card(card)
    (tmp_path / "card.pem").write_bytes(pem(demo_pki.user.cert))
    (tmp_path / "ca.pem").write_bytes(pem(demo_pki.root.cert))
    proc = run(["curl", "-sS", "--max-time", "30", "--cacert", str(tmp_path / "ca.pem"),
                "--engine", "pkcs11", "--key-type", "ENG",
                "--key", "pkcs11:id=%01;type=private;pin-value=123456",
                "--cert", str(tmp_path / "card.pem"), f"https://localhost:{nginx.port}/",
                "--resolve", f"localhost:{nginx.port}:127.0.0.1"], env=engine_env)
    assert "verify=SUCCESS" in proc.stdout, proc.stdout + proc.stderr + nginx.log()
    assert "CN=demo.user" in proc.stdout


# --------------------------------------------------------------------------- CAC

def cac_card(demo_pki: issue.DemoPki) -> CacCard:
    """A CAC whose identity applet holds an RSA key certified by the demo CA."""
    ident = issue.make_user_cert(demo_pki.intermediate, "cac.user", key_kind="rsa-2048",
                                 upn="cac.user@corp.example")
    other = KeySlot(ident.key, ident.cert)
    card = CacCard(other, other, other)
    card.issued = ident  # type: ignore[attr-defined]
    return card


def test_openssl_signs_with_the_cac_identity_key_through_the_engine(
        vpcd_card: Callable[..., VpcdLink], engine_env: dict[str, str],
        demo_pki: issue.DemoPki, tmp_path: Path) -> None:
    card = cac_card(demo_pki)
    vpcd_card(card)
    (tmp_path / "msg").write_bytes(MESSAGE)
    proc = run(["openssl", "dgst", "-sha256", "-engine", "pkcs11", "-keyform", "engine",
                "-sign", "pkcs11:id=%00%01;type=private;pin-value=123456",
                "-out", str(tmp_path / "sig"), str(tmp_path / "msg")], env=engine_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    card.issued.cert.public_key().verify(  # type: ignore[attr-defined]
        (tmp_path / "sig").read_bytes(), MESSAGE, padding.PKCS1v15(), hashes.SHA256())


def test_nss_tstclnt_authenticates_with_the_cac_to_nginx(
        vpcd_card: Callable[..., VpcdLink], nginx: Nginx, nss_home: dict[str, str],
        demo_pki: issue.DemoPki, tmp_path: Path) -> None:
    card = cac_card(demo_pki)
    vpcd_card(card)
    proc = tstclnt(nss_home, nginx.port, "123456", tmp_path)
    assert "200 OK" in proc.stdout, proc.stdout + proc.stderr + nginx.log()
    assert "CN=cac.user" in proc.stdout
