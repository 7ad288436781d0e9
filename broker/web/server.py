"""What the listeners serve: TLS contexts for the client and admin APIs, the two Sites (client
API; admin API and console), health, readiness and metrics routes.

:mod:`broker.web.process` wires them into the running process (listeners, sweepers, graceful
shutdown).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from klein import Klein
from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.ssl import (
    AcceptableCiphers,
    CertificateOptions,
    PrivateCertificate,
    TLSVersion,
)
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from broker import metrics
from broker.codes import Code
from broker.errors import BrokerError
from broker.service.context import BrokerContext
from broker.web import http as http_edge
from broker.web import ticket_keys
from broker.web.access import record as record_access
from broker.web.errors import error_body
from broker.web.http import (
    Access,
    BrokerChannel,
    BrokerRequest,
    JsonApi,
    JsonRequest,
    client_address,
    write_json,
)

REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

log = logging.getLogger("broker.server")
reactor: Any = _reactor  # the global reactor; its interfaces confuse type checkers


class ServerError(BrokerError):
    code = Code.SERVER_CONFIG_INVALID


# --------------------------------------------------------------------------- TLS

@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    generated: bool = False


def dev_certificate(folder: Path) -> TlsFiles:
    """A self-signed P-256 certificate for localhost under ``folder`` (made once, then reused)."""
    from broker.private_files import private_dir, write_private

    private_dir(folder)
    cert_path, key_path = folder / "dev-cert.pem", folder / "dev-key.pem"
    if cert_path.exists() and key_path.exists():
        return TlsFiles(cert_path, key_path, generated=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smartcard-broker dev")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return TlsFiles(cert_path, key_path, generated=True)


def resolve_tls(ctx: BrokerContext, dev: bool) -> TlsFiles:
    """The TLS files to serve with; ServerError when none are configured and not --dev."""
    s = ctx.settings
    if s.server.tls_cert and s.server.tls_key:
        files = TlsFiles(s.path(s.server.tls_cert), s.path(s.server.tls_key))
        for what, p in (("server.tls_cert", files.cert), ("server.tls_key", files.key)):
            if not p.is_file():
                raise ServerError(message=f"{what}: file not found: {p}", details={"key": what})
        return files
    if s.server.tls_cert or s.server.tls_key:
        raise ServerError(message="server.tls_cert and server.tls_key must be set together")
    if not dev:
        raise ServerError(message="no TLS certificate configured: set server.tls_cert and "
                                  "server.tls_key, or run `broker serve --dev` for a self-signed "
                                  "development certificate")
    return dev_certificate(s.state_path / "dev-tls")


#: TLS 1.2 suites (Mozilla's "intermediate" profile less DHE): forward-secret key exchange
#: (ECDHE) and AEAD ciphers only — no CBC, no SHA-1 MAC, no static-RSA key exchange. TLS 1.3's
#: suites are all of that kind and are left to OpenSSL.
TLS12_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                 "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                 "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")


def tls_options(files: TlsFiles, *, tickets: bool = False) -> CertificateOptions:
    """pyOpenSSL context options: TLS 1.2+ with :data:`TLS12_CIPHERS`, the certificate chain
    and key from PEM files; ``tickets`` lets the context issue TLS session tickets (see
    :class:`TlsContexts`)."""
    try:
        cert_pem = files.cert.read_bytes()
        key_pem = files.key.read_bytes()
        chain = x509.load_pem_x509_certificates(cert_pem)
        private = PrivateCertificate.loadPEM(key_pem + b"\n" + cert_pem)
    except (OSError, ValueError, Exception) as exc:  # pyOpenSSL raises its own Error types
        raise ServerError(message=f"cannot load TLS certificate/key ({files.cert}, {files.key}): "
                                  f"{exc}") from None
    from OpenSSL.crypto import X509

    extra = [X509.from_cryptography(c) for c in chain[1:]]
    return CertificateOptions(privateKey=private.privateKey.original,
                              certificate=private.original, extraCertChain=extra,
                              raiseMinimumTo=TLSVersion.TLSv1_2, enableSessionTickets=tickets,
                              acceptableCiphers=AcceptableCiphers.fromOpenSSLCipherString(
                                  TLS12_CIPHERS))


#: Sessions and tickets carry this context (and the listener's name): a session of one listener
#: never resumes on the other.
SESSION_ID_CONTEXT = b"smartcard-broker"


@implementer(IOpenSSLContextFactory)
class TlsContexts:
    """One listener's OpenSSL contexts, with TLS session resumption for returning clients.

    With ``resumption`` on, each context issues session tickets (stateless; TLS 1.3 and 1.2)
    and keeps a server-side session cache, under a session-id context naming the listener.
    Each listener has its own contexts, so its own ticket keys: a ticket from the client port
    does not resume on the admin port. By default the ticket key is OpenSSL's own random one
    (per process and per context); a new period of ``rotation_s`` seconds gets a new context
    (new key, empty session cache), open connections keep theirs, and older tickets fall back
    to a full handshake.

    Given a ``ticket_secret`` (``server.tls_shared_ticket_keys`` with several workers: the
    supervisor's, after :func:`broker.web.ticket_keys.probe` succeeded in a child process), the
    key is derived from it, the listener and the period (:mod:`broker.web.ticket_keys`), so a
    ticket resumes on every worker of the supervisor. Resumption skips the certificate
    exchange and signature only: the broker does not ask for TLS client certificates, so no
    client identity rides on a resumed session.

    Implements Twisted's ``IOpenSSLContextFactory`` (``getContext`` per new connection).
    """

    def __init__(self, files: TlsFiles, *, resumption: bool, rotation_s: float,
                 clock: Any = None, ticket_secret: bytes | None = None,
                 listener: str = "client") -> None:
        self.files = files
        self.resumption = resumption
        self.rotation_s = rotation_s
        self.listener = listener
        self._clock = clock or reactor.seconds
        self._context: Any = None
        self._period = 0
        self.rotations = 0
        self._secret = ticket_secret
        self._set_key = ticket_keys.ticket_key_setter() \
            if resumption and ticket_secret is not None else None

    @property
    def shared_ticket_keys(self) -> bool:
        """Whether tickets resume on every worker given the same secret."""
        return self._set_key is not None

    def _make(self, period: int) -> Any:
        from OpenSSL import SSL

        ctx = tls_options(self.files, tickets=self.resumption).getContext()
        if self.resumption:
            ctx.set_session_id(SESSION_ID_CONTEXT + b"/" + self.listener.encode())
            ctx.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
            ctx.set_timeout(int(min(self.rotation_s, 7200)))
            if self._set_key is not None and self._secret is not None:
                self._set_key(ctx, ticket_keys.derive_key(self._secret, period, self.listener))
        return ctx

    def getContext(self) -> Any:  # noqa: N802 (twisted API)
        period = ticket_keys.period_of(self._clock(), self.rotation_s)
        if self._context is None:
            self._context, self._period = self._make(period), period
        elif self.resumption and period != self._period:
            try:
                self._context = self._make(period)
                self.rotations += 1
            except ServerError as exc:  # e.g. the files are being replaced: keep serving
                log.warning("TLS context rotation failed; keeping the current one",
                            extra={"error": exc.message})
            self._period = period
        return self._context


# --------------------------------------------------------------------------- sites

#: The Server header of every answer (Twisted's names its version).
SERVER_HEADER = b"smartcard-broker"
_ARG_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def input_problem(request: Any) -> str | None:
    """Why the request line cannot reach a route (None: it can): a path that is not UTF-8 once
    percent-decoded, a control character in the path (``%00`` in an id), NUL or another control
    character (but tab, LF, CR) in a query or form parameter; not in a file a multipart form
    uploads (a console ``NAME__file``: a DER certificate is bytes; its reader parses it)."""
    path = unquote_to_bytes(request.path or b"")
    try:
        text = path.decode("utf-8")
    except UnicodeDecodeError:
        return "The request path is not UTF-8."
    if http_edge.IDENTIFIER_CONTROL.search(text):
        return "The request path holds a control character."
    files = (request.getHeader(b"content-type") or b"").lower().startswith(b"multipart/form-data")
    for name, values in (request.args or {}).items():
        if _ARG_CONTROL.search(name) or (not (files and name.endswith(b"__file"))
                                         and any(_ARG_CONTROL.search(v) for v in values)):
            return "A query or form parameter holds a control character (such as NUL)."
    return None


class Refusal(Resource):
    """Answers every request with one JSON error (input refused before routing)."""

    isLeaf = True  # noqa: N815 (twisted API)

    def __init__(self, status: int, code: Code, message: str) -> None:
        super().__init__()
        self.status, self.code, self.message = status, code, message

    def render(self, request: Any) -> bytes:
        request.error_code = self.code.value
        return write_json(request, self.status, error_body(self.code.value, self.message))


class BrokerSite(Site):
    """A Site that counts in-flight requests so shutdown can wait for them."""

    requestFactory = BrokerRequest  # noqa: N815 (twisted API)
    #: One BrokerChannel per connection, HTTP/1.1 only (the listeners offer no ALPN h2); the
    #: Site sets its ``callLater`` from the Site's reactor. (Twisted annotates this attribute
    #: with its private HTTP/2-switching proxy; a plain channel is what it builds for 1.1.)
    protocol = BrokerChannel  # type: ignore[assignment]

    def __init__(self, resource: Resource, api: str = "client", **kw: Any) -> None:
        super().__init__(resource, **kw)
        self.api = api
        self.in_flight = 0
        self._idle: list[defer.Deferred[None]] = []
        self.noisy = False
        self.channels: set[Any] = set()

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802 (twisted API)
        channel = super().buildProtocol(addr)
        if channel is not None:
            self.channels.add(channel)
            lost = channel.connectionLost

            def connection_lost(reason: Any) -> None:
                self.channels.discard(channel)
                lost(reason)

            channel.connectionLost = connection_lost
        return channel

    def close_connections(self) -> None:
        """Close every connection once its buffered response bytes are written."""
        for channel in list(self.channels):
            transport = getattr(channel, "transport", None)
            if transport is not None:
                transport.loseConnection()

    def log(self, request: Any) -> None:
        """Replaces Twisted's access log (it records raw paths, which carry session and
        challenge ids): requests no JSON route answered (unknown paths, /metrics) get the same
        one line by route template; the rest were recorded by the route wrapper already."""
        if not getattr(request, "access_recorded", False):
            started = getattr(request, "started_at", None)
            clock: Any = self.reactor
            elapsed = (clock.seconds() - started) if started is not None else 0.0
            status = int(getattr(request, "code", 0) or 0)
            record_access(request, self.api, status,
                          "ok" if status < 400 else getattr(request, "error_code", "error"),
                          elapsed, client=client_address(request))

    def getResourceFor(self, request: Any) -> Any:  # noqa: N802 (twisted API)
        clock: Any = self.reactor
        request.started_at = clock.seconds()
        # Honour a sane X-Request-Id on every answer, routed or not (json_route does it again).
        rid_in = request.getHeader(b"x-request-id")
        if rid_in and REQUEST_ID_OK.match(rid_in.decode("ascii", "replace")):
            request.request_id = rid_in.decode()
        request.setHeader(b"x-request-id", request.request_id.encode())
        request.setHeader(b"server", SERVER_HEADER)
        self.in_flight += 1
        request.notifyFinish().addBoth(self._finished)
        problem = input_problem(request)
        if problem is not None:
            # Anyone can send these: an info line (the access line says 400), no traceback.
            log.info("request refused before routing", extra={
                "api": self.api, "reason": problem, "client": client_address(request),
                "request_id": request.request_id})
            return Refusal(400, Code.MALFORMED_REQUEST, problem)
        return super().getResourceFor(request)

    def _finished(self, _: object) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def wait_idle(self) -> defer.Deferred[None]:
        if self.in_flight == 0:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._idle.append(d)
        return d


def readiness(ctx: BrokerContext) -> str | None:
    """Why the broker cannot serve logins right now (None: it can). Blocking: run in the pool."""
    from sqlalchemy.exc import SQLAlchemyError

    from broker.store import migrate

    try:
        current = migrate.current_revision(ctx.db.engine)
    except SQLAlchemyError as exc:
        log.warning("database not reachable", extra={"error": type(exc).__name__})
        return "database_unreachable"
    if current != migrate.head_revision():
        return "schema_not_at_head"
    return None


def add_operational_routes(api: JsonApi, ctx: BrokerContext) -> None:
    """/healthz (process up), /readyz (database reachable, schema at head), /metrics
    (Prometheus text: always on the admin listener, on the client one only when
    server.metrics_on_client is set)."""

    @api.route("/healthz", "GET", access=Access.ANONYMOUS)
    async def healthz(request: Any) -> tuple[int, Any]:
        # The pid only on the admin listener (operators and tests tell workers apart by it).
        return 200, {"status": "ok", "pid": os.getpid()} if api.name == "admin" \
            else {"status": "ok"}

    @api.route("/readyz", "GET", access=Access.ANONYMOUS)
    async def readyz(request: Any) -> tuple[int, Any]:
        reason = await ctx.call(readiness, ctx)
        if reason is not None:
            return 503, {"status": "unavailable", "reason": reason,
                         "database": "unreachable" if reason == "database_unreachable"
                         else "ok"}
        body: dict[str, Any] = {"status": "ok", "database": "ok"}
        degraded = ctx.ldap.degraded() if "ldap" in vars(ctx) else {}
        if degraded:  # one directory's LDAP server down is not the broker down
            body["degraded_directories"] = degraded
        return 200, body

    if api.name == "admin" or ctx.settings.server.metrics_on_client:
        store = metrics.StoreCollector(
            lambda: ctx.db.transaction(lambda s: metrics.read_store(s, ctx.now())),
            lambda: readiness(ctx))

        def scrape() -> tuple[bytes, str]:
            try:
                store.refresh()
            except Exception as exc:  # e.g. a table gone: the rest is still worth a scrape
                log.warning("metrics: database gauges unavailable",
                            extra={"error": type(exc).__name__})
            return metrics.render(store)

        @api.raw_route("/metrics", "GET", access=Access.ANONYMOUS)
        async def prometheus(request: Any) -> bytes:
            # Read and rendered in the thread pool: a scrape never holds the reactor.
            body, content_type = await ctx.call(scrape)
            request.setHeader(b"content-type", content_type.encode())
            return body


def install_json_errors(app: Klein, api: str) -> None:
    """Unknown paths and methods get the JSON error shape, not HTML."""
    from werkzeug.exceptions import MethodNotAllowed, NotFound

    @app.handle_errors(NotFound)
    def not_found(request: Any, failure: Any) -> bytes:
        request.error_code = "not_found"
        return write_json(request, 404, {"error": {"code": "not_found", "message":
                                                  "No such API path.", "details": {}}})

    @app.handle_errors(MethodNotAllowed)
    def not_allowed(request: Any, failure: Any) -> bytes:
        request.error_code = "method_not_allowed"
        return write_json(request, 405, {"error": {"code": "method_not_allowed", "message":
                                                  "That method is not allowed on this path.",
                                                  "details": {}}})


def build_apis(ctx: BrokerContext) -> tuple[JsonApi, JsonApi]:
    """The client and admin APIs with every route declared (operational routes included)."""
    from broker.web.admin_api import build_admin_api
    from broker.web.client_api import build_client_api
    from broker.web.openapi import add_openapi_route

    apis = build_client_api(ctx), build_admin_api(ctx)
    for api in apis:
        add_operational_routes(api, ctx)
        install_json_errors(api.app, api.name)
        add_openapi_route(api, ctx)
    return apis


def build_console(ctx: BrokerContext) -> JsonApi:
    """The admin web console (/console/), every route declared like the APIs' routes."""
    from broker.web.console import ConsoleApp

    return ConsoleApp(ctx).api


class AdminRoot(Resource):
    """The admin listener: /console/… goes to the console, everything else to the admin API.

    A leaf that hands the whole request to one Klein resource, so both see full paths."""

    isLeaf = True  # noqa: N815 (twisted API)

    def __init__(self, admin: Any, console: Any) -> None:
        super().__init__()
        self.admin = admin
        self.console = console

    def render(self, request: Any) -> Any:
        if request.path == b"/console":
            request.setResponseCode(308)
            request.setHeader(b"location", b"/console/")
            return b""
        target = self.console if request.path.startswith(b"/console/") else self.admin
        return target.render(request)


def build_sites(ctx: BrokerContext) -> tuple[BrokerSite, BrokerSite]:
    s = ctx.settings.server
    BrokerRequest.max_body_bytes = BrokerChannel.max_body_bytes = s.max_body_bytes
    BrokerChannel.head_timeout_s = s.request_head_timeout_s
    BrokerChannel.body_timeout_s = s.request_body_timeout_s
    client_api, admin_api = build_apis(ctx)
    metrics.watch_pool(ctx.db.engine)
    console_api = build_console(ctx)
    return (BrokerSite(client_api.resource(), api="client", requestFactory=JsonRequest),
            BrokerSite(AdminRoot(admin_api.app.resource(), console_api.app.resource()),
                       api="admin"))
