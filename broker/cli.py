"""The `broker` command: serve, migrate, demo, admin …, pki ….

Every subcommand takes --config PATH and --database-url URL. Expected failures (bad config,
unreachable database, missing TLS file) print one line ``error: …`` and exit non-zero; a
traceback is a bug.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import click

from broker.cli_common import EXIT_USAGE, common_options, fail, first_line, redact
from broker.config import ConfigError, Settings
from broker.errors import BrokerError
from broker.sockets import bind_socket


class LazyGroup(click.Group):
    """A group whose subcommand groups are imported when named (``broker admin …`` imports the
    admin CLI; ``broker serve`` and ``broker --version`` do not pay for pki, admin, demo and
    doctor, config). ``--help`` imports them all to list them; a broken import is an error there and
    when the command is run, never a silently missing command."""

    #: name → (module, attribute) of the groups that live beside their layer.
    lazy_commands = {"admin": ("broker.admin_cli", "admin"), "demo": ("broker.demo", "demo"),
                     "doctor": ("broker.doctor", "doctor"), "pki": ("broker.pki.cli", "pki"),
                     "config": ("broker.config_cli", "config_group"),
                     "keys": ("broker.keys_cli", "keys")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands and cmd_name not in self.commands:
            import importlib

            module, attr = self.lazy_commands[cmd_name]
            command = getattr(importlib.import_module(module), attr)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="smartcard-broker")
def main() -> None:
    """smartcard-broker: a session broker for WorkSpaces with PIV/CAC smart-card login."""


# --------------------------------------------------------------------------- migrate

@main.command()
@common_options
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.option("--downgrade", is_flag=True,
              help="Downgrade to --revision (e.g. base); asks for confirmation.")
@click.option("--yes", "-y", "assume_yes", is_flag=True,
              help="Do not ask before a downgrade (it drops tables and their data).")
def migrate(settings: Settings, revision: str, downgrade: bool, assume_yes: bool) -> None:
    """Upgrade (or downgrade) the database schema."""
    os.umask(0o077)
    from sqlalchemy.exc import SQLAlchemyError

    from broker.cli_common import require_existing_database
    from broker.store import migrate as mig

    url = settings.database_url
    if downgrade:
        require_existing_database(settings)
        if not assume_yes:
            try:
                ok = click.confirm(f"Downgrade database {redact(url)} to revision {revision}? "
                                   "This drops tables and the data in them", default=False,
                                   err=True)
            except click.Abort:
                ok = False
            if not ok:
                fail("downgrade not confirmed: nothing changed (pass --yes to skip the question)")
    else:
        prepare_sqlite_folder(settings)
    from broker.keys_at_rest import load_key

    try:
        key = load_key(settings)
    except BrokerError as exc:
        fail(exc.message)
    try:
        before = mig.revision_at(url)
        if downgrade:
            mig.downgrade(url, revision, sealing_key=key)
        else:
            mig.upgrade(url, revision, sealing_key=key)
        after = mig.revision_at(url)
    except SQLAlchemyError as exc:
        fail(f"database {redact(url)}: {first_line(exc)}")
    except Exception as exc:  # alembic raises CommandError etc. for bad revisions
        fail(f"migration failed: {first_line(exc)}")
    # "0000" is the empty database (alembic's base).
    if before == after:
        click.echo(f"database {redact(url)} already at {after or '0000'}")
    else:
        click.echo(f"database {redact(url)} migrated {before or '0000'} → {after or '0000'}")


def prepare_sqlite_folder(settings: Settings) -> None:
    """Before creating a SQLite database: make the state folder (0700) if the file goes there,
    and refuse (one line) a file whose folder does not exist anywhere else — never create it.
    A new database file is created 0600 here, wherever it is (SQLite itself would make it
    0644): it holds password hashes, tokens' hashes and the sealed signing keys."""
    from broker.private_files import create_private, private_dir

    path = settings.sqlite_file
    if path is None:
        return
    if not path.parent.is_dir():
        if path.parent != settings.state_path:
            fail(f"database folder {path.parent} does not exist (database.url "
                 f"{redact(settings.database_url)})")
        try:
            private_dir(path.parent)
        except OSError as exc:
            fail(f"cannot create the state folder {path.parent}: {exc.strerror} (set "
                 "server.state_dir or database.url)")
    if not path.exists():
        try:
            create_private(path, b"")  # an empty file is an empty SQLite database
        except OSError as exc:
            fail(f"cannot create the database {path}: {exc.strerror}")


# --------------------------------------------------------------------------- serve

@main.command()
@common_options
@click.option("--listen", help="Client API endpoint (Twisted endpoint string).")
@click.option("--admin-listen", help="Admin API endpoint (Twisted endpoint string).")
@click.option("--workers", type=click.IntRange(1, 64), help="Processes sharing the sockets.")
@click.option("--dev", is_flag=True,
              help="Development mode: self-signed TLS certificate and automatic migrations.")
@click.option("--worker-fds", hidden=True, help="Internal: sockets inherited from a supervisor.")
def serve(settings: Settings, listen: str | None, admin_listen: str | None,
          workers: int | None, dev: bool, worker_fds: str | None) -> None:
    """Run the broker: client API and admin API over TLS."""
    os.umask(0o077)  # whatever it creates (database, keys, TLS pair, metrics) is its own only
    try:
        settings = settings.replace("server", listen=listen, admin_listen=admin_listen,
                                    workers=workers)
    except ConfigError as exc:
        fail(exc.message, EXIT_USAGE)
    from broker.logs import configure_logging

    configure_logging(settings.log.level, settings.log.format)
    if worker_fds is None and settings.server.workers > 1:
        return supervise(settings, dev)
    inherited = None
    ticket_secret = None
    if worker_fds:
        inherited = {k: int(v) for k, v in (p.split("=") for p in worker_fds.split(","))}
        if "tickets" in inherited:
            from broker.web.ticket_keys import read_secret

            ticket_secret = read_secret(inherited.pop("tickets"))
    run_server(settings, dev=dev, inherited=inherited, ticket_secret=ticket_secret)


def run_server(settings: Settings, *, dev: bool, inherited: dict[str, int] | None,
               ticket_secret: bytes | None = None) -> None:
    import logging

    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor

    from broker.service.context import BrokerContext
    from broker.web import process

    log = logging.getLogger("broker.serve")
    ctx = BrokerContext(settings)
    tls = startup_checks(ctx, dev, log, announce=inherited is None)
    from broker.service.wiring import install

    install(ctx)
    from broker import metrics

    metrics.start_series_at_zero()
    try:
        service = process.broker_service(
            ctx, listen_on=settings.server.listen, admin_listen_on=settings.server.admin_listen,
            tls=tls, inherited=inherited, ticket_secret=ticket_secret)
    except BrokerError as exc:
        fail(exc.message, EXIT_USAGE)
    ctx.start_threadpool()
    exit_code = [0]

    def failed(f: Any) -> None:
        from twisted.internet.error import CannotListenError

        exc = f.value
        if isinstance(exc, CannotListenError):
            why = getattr(exc.socketError, "strerror", None) or str(exc.socketError)
            msg = f"cannot listen on {exc.interface or '*'}:{exc.port}: {why}"
        else:
            msg = exc.message if isinstance(exc, BrokerError) else f.getErrorMessage()
        click.echo(f"error: {msg}", err=True)  # one line for the operator, not a log record
        exit_code[0] = EXIT_USAGE
        reactor.stop()

    def start() -> None:
        # What twisted.application.app.startApplication does, without twistd's other baggage:
        # the pool stops "during" shutdown, so after the service has drained "before" it.
        service.startService()
        reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
        service.listening().addErrback(failed)

    reactor.callWhenRunning(start)
    reactor.run()
    ctx.db.dispose()
    if exit_code[0]:
        sys.exit(exit_code[0])


def startup_checks(ctx: Any, dev: bool, log: Any, *, announce: bool = True) -> Any:
    """Everything `serve` needs, checked before listening: the region catalogue, the TLS files,
    the database (reachable, schema at head; --dev migrates), the listen addresses. One line
    and exit 1 on failure (2 when an address cannot be listened on).
    Returns the TLS files."""
    from sqlalchemy.exc import SQLAlchemyError

    from broker.cli_common import require_existing_database
    from broker.doctor import listen_problem, tls_problem
    from broker.store import migrate as mig
    from broker.web import server

    try:
        ctx.catalogue  # noqa: B018 (load now: a bad catalogue refuses the start)
        ctx.sealing_key  # noqa: B018 (made at the first start; a bad key file refuses it)
        tls = server.resolve_tls(ctx, dev)
    except BrokerError as exc:
        fail(exc.message)
    except OSError as exc:
        fail(f"cannot create {exc.filename}: {exc.strerror} (set server.state_dir or "
             "keys.encryption_key_file)")
    problem = tls_problem(tls)  # unreadable or mismatched files fail here, not per connection
    if problem is not None:
        fail(problem)
    if announce:  # workers adopt the supervisor's sockets: nothing to try for them
        s = ctx.settings.server
        for key, endpoint in (("listen", s.listen), ("admin_listen", s.admin_listen)):
            why = listen_problem(endpoint)
            if why is not None:
                fail(f"server.{key} {endpoint}: {why}", EXIT_USAGE)
    if dev:
        prepare_sqlite_folder(ctx.settings)
    else:
        require_existing_database(ctx.settings)
    url = redact(ctx.settings.database_url)
    try:
        current = mig.current_revision(ctx.db.engine)
        head = mig.head_revision()
        if current != head:
            if not dev:
                fail(f"database {url} schema is at {current or 'nothing'}, not {head}: run "
                     "`broker migrate` first")
            mig.upgrade(ctx.settings.database_url, sealing_key=ctx.sealing_key)
            log.info("dev: database migrated to head", extra={"revision": head})
    except SQLAlchemyError as exc:
        fail(f"database {url} unreachable: {first_line(exc)}")
    except BrokerError as exc:
        fail(exc.message)
    if tls.generated and announce:
        log.warning("using a self-signed development certificate (not for production)",
                    extra={"cert": str(tls.cert)})
    return tls


def supervise(settings: Settings, dev: bool) -> None:
    """Bind the sockets once, run N worker processes that adopt them, restart any that die."""
    if settings.database_url.startswith("sqlite"):
        fail("--workers > 1 needs PostgreSQL: SQLite is for one process", EXIT_USAGE)
    import logging

    from broker.service.context import BrokerContext

    log = logging.getLogger("broker.serve")
    startup_checks(BrokerContext(settings), dev, log)  # once, before forking (makes the dev cert)
    socks = {}
    for name, key in (("client", "listen"), ("admin", "admin_listen")):
        endpoint = getattr(settings.server, key)
        try:
            socks[name] = bind_socket(endpoint)
        except BrokerError as exc:
            fail(exc.message, EXIT_USAGE)
        except OSError as exc:
            fail(f"server.{key} {endpoint}: {exc.strerror or exc}", EXIT_USAGE)
    from broker import metrics

    # Workers write their metrics here and any of them answers a scrape with the sum.
    metrics.prepare_multiprocess_dir(str(settings.state_path / "metrics"))
    from broker.web import ticket_keys

    # Opt-in: one TLS ticket secret for every worker of this supervisor (and its restarted
    # workers), so a ticket resumes on any of them; each worker reads it from its own pipe. The
    # key setting reaches into cryptography's private extension, so it is tried in a child
    # process first: a failure or crash there only leaves each worker its own key.
    secret = None
    if settings.server.tls_shared_ticket_keys and settings.server.tls_session_resumption:
        problem = ticket_keys.probe()
        if problem is None:
            secret = ticket_keys.new_secret()
            log.info("TLS ticket keys shared by the workers")
        else:
            log.warning("TLS ticket keys cannot be shared by the workers; each keeps its own "
                        "(a ticket resumes only on the worker that issued it)",
                        extra={"reason": problem})
    fds = ",".join(f"{k}={s.fileno()}" for k, s in socks.items())
    options: list[str] = []
    if settings.source != "<defaults>":
        options += ["--config", settings.source]
    options += ["--database-url", settings.database.url]
    if dev:
        options.append("--dev")
    stopping = False
    children: list[subprocess.Popen[bytes]] = []

    def spawn() -> subprocess.Popen[bytes]:
        if secret is None:
            return subprocess.Popen(
                [sys.executable, "-m", "broker.cli", "serve", "--worker-fds", fds, *options],
                pass_fds=[s.fileno() for s in socks.values()], env=dict(os.environ))
        pipe = ticket_keys.secret_pipe(secret)
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "broker.cli", "serve", "--worker-fds",
                 f"{fds},tickets={pipe}", *options],
                pass_fds=[*(s.fileno() for s in socks.values()), pipe], env=dict(os.environ))
        finally:
            os.close(pipe)

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for c in children:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children.extend(spawn() for _ in range(settings.server.workers))
    log.info("workers started", extra={"workers": settings.server.workers,
                                       "listen": settings.server.listen,
                                       "admin_listen": settings.server.admin_listen})
    while True:
        alive = [c for c in children if c.poll() is None]
        if stopping and not alive:
            break
        if not stopping:
            for i, c in enumerate(children):
                if c.poll() is not None:
                    metrics.worker_exited(c.pid)
                    log.warning("worker exited; restarting",
                                extra={"pid": c.pid, "returncode": c.returncode})
                    time.sleep(1)
                    if stopping:  # SIGTERM came during the pause: a new child would never
                        break     # get it, and the supervisor would wait for it forever
                    children[i] = spawn()
        time.sleep(0.2)


if __name__ == "__main__":
    main()
