"""`broker doctor`: is this installation able to serve? One line per check, for people and for
monitoring (``--json``; exit 0 all good, 1 a check failed, 2 unusable input such as a bad
config file).

Checks: everything `serve` checks at start (config, region catalogue, database reachable and at
the migration head, TLS key matching the certificate and an ordered chain, listen addresses free
or held by a running broker), TLS certificate expiry, the modes of private files (database,
keys, TLS key, metrics: warn when others may read them), per directory the earliest CA expiry
and CRL next update, revocation coverage of hard-fail directories (broker.pki.coverage), OCSP
responders reachable (from the AIA of the stored CA certificates), and the clock against the
database server's. Like every command that only reads, it never creates a
file: a missing SQLite database is a failed check.
"""

from __future__ import annotations

import json
import socket
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from broker.cli_common import common_options, first_line, redact
from broker.config import Settings

OK, FAIL, WARN, SKIP = "ok", "fail", "warn", "skip"
MAX_CLOCK_SKEW = timedelta(seconds=30)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str
    subject: str = ""

    def line(self) -> str:
        what = f"{self.name} {self.subject}".strip()
        return f"{self.status.upper():<5} {what:<28} {self.detail}"


def _days(delta: timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.0f} days" if abs(days) >= 2 else f"{delta.total_seconds() / 3600:.1f} hours"


def expiry_check(name: str, subject: str, until: datetime, now: datetime, warn_days: int,
                 what: str) -> Check:
    left = until - now
    if left <= timedelta(0):
        return Check(name, FAIL, f"{what} expired {_days(-left)} ago ({until:%Y-%m-%d %H:%M}Z)",
                     subject)
    status = WARN if left < timedelta(days=warn_days) else OK
    return Check(name, status, f"{what} in {_days(left)} ({until:%Y-%m-%d %H:%M}Z)", subject)


def check_catalogue(settings: Settings) -> Check:
    from broker.errors import BrokerError
    from broker.regions import RegionCatalogue

    try:
        path = settings.catalogue_path
        catalogue = RegionCatalogue.load(path)
    except BrokerError as exc:
        return Check("catalogue", FAIL, exc.message)
    return Check("catalogue", OK, f"{len(list(catalogue.region_ids()))} regions from {path}")


def check_tls(settings: Settings, now: datetime, warn_days: int) -> Check:
    from cryptography import x509

    s = settings.server
    if not (s.tls_cert and s.tls_key):
        return Check("tls", FAIL, "server.tls_cert and server.tls_key are not set (serve would "
                                  "refuse to start without --dev)")
    cert_path, key_path = settings.path(s.tls_cert), settings.path(s.tls_key)
    try:
        cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
        key_path.read_bytes()
    except OSError as exc:
        return Check("tls", FAIL, f"cannot read {exc.filename}: {exc.strerror}")
    except ValueError as exc:
        return Check("tls", FAIL, f"{cert_path}: not a PEM certificate ({exc})")
    from broker.web.server import TlsFiles

    problem = tls_problem(TlsFiles(cert_path, key_path))
    if problem is not None:
        return Check("tls", FAIL, problem)
    from cryptography.hazmat.primitives import hashes

    # the fingerprint clients pin on first use (`broker-client register` shows the same)
    fp = cert.fingerprint(hashes.SHA256()).hex()
    return expiry_check("tls", "", cert.not_valid_after_utc, now, warn_days,
                        f"certificate {cert.subject.rfc4514_string()} (sha256 {fp}) expires")


def tls_problem(files: Any) -> str | None:
    """What `serve` would refuse in the TLS files (unreadable, key not matching the
    certificate) or serve broken (a chain whose certificates do not issue one another), or
    None. Used by `serve` at start and by doctor."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    from broker.errors import BrokerError
    from broker.web.server import tls_options

    try:
        tls_options(files).getContext()
    except BrokerError as exc:
        return exc.message
    except Exception as exc:  # pyOpenSSL's Error: the key does not match the certificate
        return (f"{files.key} does not match the certificate in {files.cert} "
                f"({first_line(exc) or type(exc).__name__})")
    chain = x509.load_pem_x509_certificates(files.cert.read_bytes())
    for i, (cert, issuer) in enumerate(zip(chain, chain[1:], strict=False), start=1):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            return (f"{files.cert}: certificate {i + 1} ({issuer.subject.rfc4514_string()}) "
                    f"did not issue certificate {i} ({cert.subject.rfc4514_string()}); put "
                    "the server certificate first, then each issuer in order")
    return None


def listen_problem(endpoint: str) -> str | None:
    """Why `serve` could not listen on a tcp: ``endpoint`` now (None: it could, or the
    endpoint is not tcp: and is left to serve). Binds and closes at once."""
    import errno

    from broker.config import ConfigError
    from broker.sockets import bind_socket

    try:
        bind_socket(endpoint).close()
    except ConfigError:
        return None  # not a tcp: endpoint (unix:, systemd:): nothing to try here
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return "address already in use"
        if exc.errno == errno.EACCES:
            return "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)"
        return exc.strerror or str(exc)
    return None


def running_broker(endpoint: str, timeout: float) -> int | None:
    """The pid a broker on ``endpoint`` reports at /healthz (TLS, unverified: only asking
    whether the port is ours), or None."""
    import http.client
    import ssl

    from broker.sockets import parse_tcp_endpoint

    try:
        host, port, _ = parse_tcp_endpoint(endpoint)
    except Exception:
        return None
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
        try:
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            body = json.loads(resp.read()) if resp.status == 200 else {}
        finally:
            conn.close()
    except (OSError, ValueError, http.client.HTTPException):
        return None
    pid = body.get("pid") if isinstance(body, dict) else None
    return pid if isinstance(pid, int) else None


def check_listen(settings: Settings, timeout: float) -> list[Check]:
    s = settings.server
    checks = []
    for key, endpoint in (("listen", s.listen), ("admin_listen", s.admin_listen)):
        problem = listen_problem(endpoint)
        if problem is None:
            checks.append(Check("listen", OK, f"server.{key} {endpoint} is free", key))
            continue
        pid = None
        if problem == "address already in use":
            # A running broker holds its own ports; the admin one answers even behind a
            # PROXY-protocol balancer.
            pid = running_broker(endpoint, timeout) or running_broker(s.admin_listen, timeout)
        if pid is not None:
            checks.append(Check("listen", OK, f"server.{key} {endpoint} is served by a running "
                                              f"broker (pid {pid})", key))
        else:
            checks.append(Check("listen", FAIL, f"server.{key} {endpoint}: {problem}; serve "
                                                "could not listen", key))
    return checks


def check_store(settings: Settings, now: datetime, warn_days: int,
                timeout: float) -> list[Check]:
    """Database, schema head, per-directory CA/CRL expiry, OCSP reachability, clock."""
    from sqlalchemy import func, select, text
    from sqlalchemy.exc import SQLAlchemyError

    from broker.service.coverage import directory_gaps
    from broker.store import migrate
    from broker.store.db import Database
    from broker.store.models import AuditEvent, Crl, Directory, TrustCertificate

    url = redact(settings.database_url)
    sqlite_file = settings.sqlite_file
    if sqlite_file is not None and not sqlite_file.is_file():
        return [Check("database", FAIL, f"{sqlite_file} does not exist (run `broker migrate`)")]
    db = Database(settings.database_url, pool_size=1, retries=0)
    checks: list[Check] = []
    try:
        current = migrate.current_revision(db.engine)
        checks.append(Check("database", OK, f"{url} reachable"))
        head = migrate.head_revision()
        if current != head:
            checks.append(Check("migrations", FAIL, f"schema at {current or 'nothing'}, head is "
                                                    f"{head}: run `broker migrate`"))
            return checks
        checks.append(Check("migrations", OK, f"at head {head}"))
        with db.sessionmaker() as session:
            directories = list(session.scalars(select(Directory.id).order_by(Directory.id)))
            ca = dict(session.execute(
                select(TrustCertificate.directory_id, func.min(TrustCertificate.not_after))
                .group_by(TrustCertificate.directory_id)).all())
            crl = dict(session.execute(
                select(Crl.directory_id, func.min(Crl.next_update))
                .group_by(Crl.directory_id)).all())
            ocsp_dirs = set(session.scalars(select(Directory.id).where(
                Directory.revocation_ocsp.is_(True))))
            ders = list(session.execute(select(TrustCertificate.directory_id, TrustCertificate.der)
                                   .where(TrustCertificate.directory_id.in_(ocsp_dirs))).all())
            from broker.service.ldapdir import settings_of

            ldap_settings = [ls for row in session.scalars(select(Directory).where(
                Directory.ldap_url.is_not(None))) if (ls := settings_of(row)) is not None]
            db_now = None
            if db.dialect == "postgresql":
                db_now = session.execute(text("SELECT now()")).scalar_one()
            # The newest audit event (indexed): a clock earlier than it went backwards.
            last_event = session.scalar(select(func.max(AuditEvent.at)))
            hard = set(session.scalars(select(Directory.id).where(
                Directory.revocation_fail_mode == "hard")))
            gaps = {d: directory_gaps(session, d, now) for d in sorted(hard)}
    except SQLAlchemyError as exc:
        checks.append(Check("database", FAIL, f"{url}: {first_line(exc)}"))
        return checks
    finally:
        db.dispose()
    for d in directories:
        if ca.get(d) is not None:
            checks.append(expiry_check("ca", d, ca[d], now, warn_days, "first CA expires"))
        else:
            checks.append(Check("ca", WARN, "no trust anchors: smart-card login impossible", d))
        next_update = crl.get(d)
        if next_update is not None:
            checks.append(expiry_check("crl", d, next_update, now, 1,
                                       "earliest CRL next update"))
    for d, found in gaps.items():
        if not found:
            checks.append(Check("revocation", OK, "hard fail: every CA certificate has a "
                                                  "revocation source", d))
        checks.extend(Check("revocation", FAIL, g["message"], d) for g in found)
    checks.extend(check_ocsp(ders, timeout))
    checks.extend(check_ldap(ldap_settings))
    checks.append(check_clock(now, db_now, last_event))
    return checks


def check_ldap(settings: list[Any]) -> list[Check]:
    """Each LDAP directory: the service account's bind and one search of the base DN."""
    from broker.errors import BrokerError
    from broker.service.ldapdir import LdapDirectories

    service = LdapDirectories()
    checks = []
    for s in settings:
        try:
            got = service.check(s)
        except BrokerError as exc:
            checks.append(Check("ldap", FAIL, exc.message, s.directory_id))
            continue
        if got["search"]:
            checks.append(Check("ldap", OK, f"{s.url}: bound, base DN found ({got['ms']} ms)",
                                s.directory_id))
        else:
            checks.append(Check("ldap", FAIL, f"{s.url}: bound, but base DN {s.base_dn} not "
                                              "found", s.directory_id))
    return checks


def check_ocsp(ders: list[Any], timeout: float) -> list[Check]:
    from cryptography import x509

    from broker.pki.revocation import ocsp_urls

    urls: dict[str, set[str]] = {}
    for directory, der in ders:
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            continue
        for url in ocsp_urls(cert):
            urls.setdefault(url, set()).add(directory)
    checks = []
    for url, dirs in sorted(urls.items()):
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            with socket.create_connection((parts.hostname or "", port), timeout=timeout):
                pass
        except OSError as exc:
            checks.append(Check("ocsp", FAIL, f"{url} unreachable: {exc.strerror or exc}",
                                ",".join(sorted(dirs))))
        else:
            checks.append(Check("ocsp", OK, f"{url} reachable", ",".join(sorted(dirs))))
    return checks


def check_clock(now: datetime, db_now: datetime | None,
                last_event: datetime | None = None) -> Check:
    """The clock against the database server's (PostgreSQL) and against the newest audit
    event: certificate validity, challenge expiry and tickets all depend on it."""
    if last_event is not None and now < last_event - MAX_CLOCK_SKEW:
        return Check("clock", FAIL, f"local clock {now:%Y-%m-%d %H:%M:%S}Z is before the newest "
                                    f"audit event ({last_event:%Y-%m-%d %H:%M:%S}Z): it went "
                                    "backwards")
    if db_now is None:
        return Check("clock", OK, f"local clock {now:%Y-%m-%d %H:%M:%S}Z, not before the newest "
                                  "audit event (SQLite: no server clock to compare with)")
    if db_now.tzinfo is None:
        db_now = db_now.replace(tzinfo=UTC)
    skew = abs((now - db_now).total_seconds())
    status = OK if skew <= MAX_CLOCK_SKEW.total_seconds() else FAIL
    return Check("clock", status, f"{skew:.1f} s from the database server's clock "
                                  f"(limit {MAX_CLOCK_SKEW.total_seconds():.0f} s)")


def private_paths(settings: Settings) -> list[Path]:
    """What only the broker's user should read: the state folder, the SQLite database (with its
    journal files), the key sealing the signing keys, the TLS private keys, the metrics."""
    from broker.keys_at_rest import key_file_path

    state = settings.state_path
    paths = [state, state / "keys", key_file_path(settings)[0], state / "metrics",
             state / "dev-tls", state / "dev-tls" / "dev-key.pem"]
    if settings.server.tls_key:
        paths.append(settings.path(settings.server.tls_key))
    db = settings.sqlite_file
    if db is not None:
        paths += [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"),
                  db.with_name(db.name + "-journal")]
    return paths


def check_modes(settings: Settings) -> list[Check]:
    """A warning per private file or folder that group or others may use (files want 0600,
    folders 0700); one ok line otherwise. Missing paths are not this check's business."""
    import stat

    loose, seen = [], 0
    for p in private_paths(settings):
        try:
            st = p.stat()
        except OSError:
            continue
        seen += 1
        if st.st_mode & 0o077:
            want = "700" if stat.S_ISDIR(st.st_mode) else "600"
            loose.append(Check("permissions", WARN, f"mode {stat.S_IMODE(st.st_mode):o}: "
                                                    f"other users may read it (chmod {want})",
                               str(p)))
    return loose or [Check("permissions", OK, f"{seen} private files and folders: owner only")]


def run_checks(settings: Settings, warn_days: int = 14, timeout: float = 3.0) -> list[Check]:
    now = datetime.now(UTC)
    source = settings.source
    checks = [Check("config", OK, str(Path(source).resolve()) if source != "<defaults>"
                    else "no config file: built-in defaults")]
    checks.append(check_catalogue(settings))
    checks.extend(check_store(settings, now, warn_days, timeout))
    checks.append(check_tls(settings, now, warn_days))
    checks.extend(check_modes(settings))
    checks.extend(check_listen(settings, timeout))
    return checks


@click.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of lines.")
@click.option("--warn-days", type=click.IntRange(0, 3650), default=14, show_default=True,
              help="Warn when a certificate expires within this many days.")
@click.option("--timeout", type=click.FloatRange(0.1, 60), default=3.0, show_default=True,
              help="Seconds to wait for each OCSP responder.")
def doctor(settings: Settings, as_json: bool, warn_days: int, timeout: float) -> None:
    """Check that this installation can serve: one line per check; exit 0 ok, 1 a check
    failed, 2 unusable input."""
    checks = run_checks(settings, warn_days, timeout)
    failed = any(c.status == FAIL for c in checks)
    if as_json:
        click.echo(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]},
                              indent=2))
    else:
        for c in checks:
            click.echo(c.line())
    sys.exit(1 if failed else 0)
