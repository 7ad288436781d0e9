"""TLS contexts: resumption settings, rotation to a new context (a new ticket key) each period,
and ticket keys shared by the workers that hold one secret."""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path
from typing import Any

import pytest
from OpenSSL import SSL

from broker.web import ticket_keys
from broker.web.server import TlsContexts, dev_certificate

# pyOpenSSL has no get_options: set_options(0) adds nothing and returns the options in force.


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_resumption_issues_tickets_and_caches_sessions(tmp_path: Path) -> None:
    ctx = TlsContexts(dev_certificate(tmp_path), resumption=True, rotation_s=60,
                      clock=Clock()).getContext()
    assert not ctx.set_options(0) & SSL.OP_NO_TICKET
    assert ctx.get_session_cache_mode() == SSL.SESS_CACHE_SERVER


def test_without_resumption_there_are_no_tickets_and_no_cache(tmp_path: Path) -> None:
    ctx = TlsContexts(dev_certificate(tmp_path), resumption=False, rotation_s=60,
                      clock=Clock()).getContext()
    assert ctx.set_options(0) & SSL.OP_NO_TICKET
    assert ctx.get_session_cache_mode() == SSL.SESS_CACHE_OFF


def test_the_ticket_key_rotates_with_a_new_context_at_each_period(tmp_path: Path) -> None:
    clock = Clock()
    clock.now = 6000.0  # a period boundary for 60 s periods
    contexts = TlsContexts(dev_certificate(tmp_path), resumption=True, rotation_s=60,
                           clock=clock)
    first = contexts.getContext()
    clock.now += 59
    assert contexts.getContext() is first
    clock.now += 1
    assert contexts.getContext() is not first and contexts.rotations == 1


# ------------------------------------------------------------------ shared ticket keys

_clients: dict[Path, ssl.SSLContext] = {}


def _resumes(server_ctx: SSL.Context, session: ssl.SSLSession | None,
             cafile: Path) -> tuple[ssl.SSLSession, bool]:
    """One TLS connection through memory BIOs (Python's ssl as the client, as in the real
    tests) offering ``session``: (the session to offer next, whether this one was resumed)."""
    if cafile not in _clients:
        _clients[cafile] = ssl.create_default_context(cafile=str(cafile))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = _clients[cafile].wrap_bio(incoming, outgoing, server_hostname="localhost",
                                       session=session)
    server = SSL.Connection(server_ctx)
    server.set_accept_state()

    def pump() -> None:
        if outgoing.pending:
            server.bio_write(outgoing.read())
        try:
            incoming.write(server.bio_read(65536))
        except SSL.WantReadError:
            pass

    sides: list[tuple[Any, type[Exception]]] = [(client.do_handshake, ssl.SSLWantReadError),
                                                (server.do_handshake, SSL.WantReadError)]
    done = [False, False]
    for _ in range(10):
        for i, (handshake, want_read) in enumerate(sides):
            if not done[i]:
                try:
                    handshake()
                    done[i] = True
                except want_read:
                    pass
            pump()
    assert done == [True, True]
    server.send(b"x")  # TLS 1.3's NewSessionTicket messages travel ahead of it
    pump()
    assert client.read(1) == b"x"
    assert client.session is not None
    return client.session, client.session_reused


def test_two_workers_with_one_secret_resume_each_others_tickets(tmp_path: Path) -> None:
    files = dev_certificate(tmp_path)
    clock, secret = Clock(), b"s" * 32
    worker_a = TlsContexts(files, resumption=True, rotation_s=60, clock=clock,
                           ticket_secret=secret)
    worker_b = TlsContexts(files, resumption=True, rotation_s=60, clock=clock,
                           ticket_secret=secret)
    stranger = TlsContexts(files, resumption=True, rotation_s=60, clock=clock,
                           ticket_secret=b"t" * 32)
    assert worker_a.shared_ticket_keys
    ticket, reused = _resumes(worker_a.getContext(), None, files.cert)
    assert not reused
    _, reused = _resumes(worker_b.getContext(), ticket, files.cert)
    assert reused, "a ticket from worker A resumes on worker B"
    _, reused = _resumes(stranger.getContext(), ticket, files.cert)
    assert not reused, "another secret (another deployment or start) does not resume it"
    clock.now += 60  # the next period: a new key on both workers
    _, reused = _resumes(worker_b.getContext(), ticket, files.cert)
    assert not reused, "a ticket of the last period falls back to a full handshake"
    fresh, _ = _resumes(worker_a.getContext(), None, files.cert)
    _, reused = _resumes(worker_b.getContext(), fresh, files.cert)
    assert reused


def test_keys_differ_by_period_and_secret() -> None:
    a, b = ticket_keys.new_secret(), ticket_keys.new_secret()
    assert a != b and len(a) == 32
    key = ticket_keys.derive_key(a, 7)
    assert len(key) == 80 and key == ticket_keys.derive_key(a, 7)
    assert key != ticket_keys.derive_key(a, 8) and key != ticket_keys.derive_key(b, 7)
    assert ticket_keys.period_of(119.9, 60) == 1 and ticket_keys.period_of(120, 60) == 2


def test_the_secret_travels_through_a_pipe() -> None:
    secret = ticket_keys.new_secret()
    assert ticket_keys.read_secret(ticket_keys.secret_pipe(secret)) == secret
    read_end, write_end = os.pipe()
    os.write(write_end, b"short")
    os.close(write_end)
    with pytest.raises(ValueError, match="incomplete"):
        ticket_keys.read_secret(read_end)


def test_without_settable_keys_each_worker_keeps_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def stripped() -> None:
        raise ticket_keys.TicketKeysUnavailable("SSL_CTX_ctrl is not in the symbol table")

    monkeypatch.setattr(ticket_keys, "_find_ssl_ctx_ctrl", stripped)
    monkeypatch.setattr(ticket_keys, "_setter", None)
    monkeypatch.setattr(ticket_keys, "_problem", None)
    files = dev_certificate(tmp_path)
    with caplog.at_level(logging.WARNING, logger="broker.tls"):
        worker_a = TlsContexts(files, resumption=True, rotation_s=60, clock=Clock(),
                               ticket_secret=b"s" * 32)
        worker_b = TlsContexts(files, resumption=True, rotation_s=60, clock=Clock(),
                               ticket_secret=b"s" * 32)
    assert not worker_a.shared_ticket_keys
    assert [r.reason for r in caplog.records] == [  # type: ignore[attr-defined]
        "SSL_CTX_ctrl is not in the symbol table"], "said once, with the reason"
    ticket, _ = _resumes(worker_a.getContext(), None, files.cert)
    assert _resumes(worker_a.getContext(), ticket, files.cert)[1], "still resumes where issued"
    assert not _resumes(worker_b.getContext(), ticket, files.cert)[1]


def test_the_byte_search_finds_what_pyelftools_symbol_decoding_finds() -> None:
    """The start-up lookup searches the symbol table's bytes (decoding every symbol took ~2 s
    per process); it must agree with pyelftools' own reading of the same symbols."""
    from cryptography.hazmat.bindings import _rust
    from elftools.elf.elffile import ELFFile

    names = ("SSL_CTX_ctrl", "PyInit__rust", "SSL_CTX_new")
    found = ticket_keys._function_offsets(_rust.__file__, (*names, "no_such_function_here"))
    with open(_rust.__file__, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        decoded = {name: symtab.get_symbol_by_name(name)[0]["st_value"] for name in names}
    assert found == decoded


def test_ticket_keys_are_per_process_unless_a_secret_is_shared(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default (server.tls_shared_ticket_keys off): no secret, OpenSSL's own key per
    context, and broker/web/ticket_keys.py's symbol lookup is never run."""
    def never() -> None:
        raise AssertionError("the ELF symbol lookup ran without shared ticket keys")

    monkeypatch.setattr(ticket_keys, "_load", never)
    monkeypatch.setattr(ticket_keys, "_setter", None)
    monkeypatch.setattr(ticket_keys, "_problem", None)
    files = dev_certificate(tmp_path)
    worker_a = TlsContexts(files, resumption=True, rotation_s=60, clock=Clock())
    worker_b = TlsContexts(files, resumption=True, rotation_s=60, clock=Clock())
    assert not worker_a.shared_ticket_keys
    ticket, _ = _resumes(worker_a.getContext(), None, files.cert)
    assert _resumes(worker_a.getContext(), ticket, files.cert)[1]
    assert not _resumes(worker_b.getContext(), ticket, files.cert)[1]


def test_the_listeners_do_not_share_ticket_keys(tmp_path: Path) -> None:
    files = dev_certificate(tmp_path)
    clock, secret = Clock(), b"s" * 32
    client = TlsContexts(files, resumption=True, rotation_s=60, clock=clock,
                         ticket_secret=secret, listener="client")
    admin = TlsContexts(files, resumption=True, rotation_s=60, clock=clock,
                        ticket_secret=secret, listener="admin")
    ticket, _ = _resumes(client.getContext(), None, files.cert)
    assert not _resumes(admin.getContext(), ticket, files.cert)[1]


def _rsa_files(tmp_path: Path) -> Any:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    from broker.web.server import TlsFiles

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "rsa.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "rsa.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return TlsFiles(tmp_path / "rsa.pem", tmp_path / "rsa.key")


@pytest.mark.parametrize("suites,accepted", [
    ("AES128-GCM-SHA256:AES256-GCM-SHA384", False),  # RSA key exchange: no forward secrecy
    ("ECDHE-RSA-AES128-SHA:AES128-SHA", False),  # CBC with SHA-1
    ("ECDHE-RSA-AES128-SHA256", False),  # CBC
    ("ECDHE-RSA-AES128-GCM-SHA256", True),
    ("ECDHE-RSA-CHACHA20-POLY1305", True),
])
def test_tls12_with_an_rsa_certificate_takes_only_ecdhe_aead(tmp_path: Path, suites: str,
                                                             accepted: bool) -> None:
    files = _rsa_files(tmp_path)
    client = ssl.create_default_context(cafile=str(files.cert))
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers(suites + ":@SECLEVEL=0")
    _clients[files.cert] = client
    server = TlsContexts(files, resumption=False, rotation_s=60, clock=Clock()).getContext()
    if accepted:
        _resumes(server, None, files.cert)
    else:
        with pytest.raises((ssl.SSLError, SSL.Error)):
            _resumes(server, None, files.cert)


# ------------------------------------------------------------------ opt-in, probed, pinned

def test_shared_ticket_keys_are_off_by_default_and_refused_with_one_worker(
        tmp_path: Path) -> None:
    from broker.config import ConfigError, load_settings

    cfg = tmp_path / "broker.toml"
    cfg.write_text("[server]\nworkers = 1\n")
    assert not load_settings(cfg, {}).server.tls_shared_ticket_keys
    with pytest.raises(ConfigError, match="tls_shared_ticket_keys needs server.workers > 1"):
        load_settings(cfg, {"BROKER_SERVER_TLS_SHARED_TICKET_KEYS": "true"})
    cfg.write_text("[server]\nworkers = 2\ntls_shared_ticket_keys = true\n")
    assert load_settings(cfg, {}).server.tls_shared_ticket_keys


def test_the_probe_runs_in_a_child_and_survives_its_crash(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert ticket_keys.probe() is None, "this build's lookup works (the suite's premise)"
    monkeypatch.setenv(ticket_keys.PROBE_FAULT_ENV, "segv")
    reason = ticket_keys.probe()
    assert reason is not None and "SIGSEGV" in reason


def test_the_tls_extra_pins_the_tested_cryptography_majors() -> None:
    import configparser

    import cryptography

    from tests.support.server import REPO

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    pins = [line.strip() for line in cfg["options.extras_require"]["tls"].splitlines()
            if line.strip().startswith("cryptography")]
    low, high = ticket_keys.CRYPTOGRAPHY_TESTED
    assert pins == [f"cryptography>={low},<{high}"]
    ticket_keys.check_cryptography_version(cryptography.__version__)  # the installed one
    for outside in (f"{high}.0.0", f"{low - 1}.9.9", "garbage"):
        with pytest.raises(ticket_keys.TicketKeysUnavailable):
            ticket_keys.check_cryptography_version(outside)
