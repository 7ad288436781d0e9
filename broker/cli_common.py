"""What every `broker` subcommand shares: --config/--database-url, one-line errors, a context."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from broker.config import ConfigError, Settings, check_database_url, load_settings
from broker.errors import BrokerError

T = TypeVar("T")
EXIT_USAGE = 2


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--config and --database-url, resolved into a Settings passed as ``settings``."""

    @click.option("--config", "config_path", type=click.Path(dir_okay=False),
                  envvar="BROKER_CONFIG",
                  help="Config file (default: $BROKER_CONFIG, else ./config/broker.toml, else "
                       "/etc/smartcard-broker/broker.toml, else built-in defaults).")
    @click.option("--database-url", help="Database URL (overrides database.url).")
    @functools.wraps(fn)
    def wrapper(config_path: str | None, database_url: str | None, **kw: Any) -> Any:
        try:
            settings = load_settings(config_path)
            if database_url:
                check_database_url(database_url)
                settings = settings.replace("database", url=database_url)
        except ConfigError as exc:
            fail(exc.message, EXIT_USAGE)
        return fn(settings=settings, **kw)

    return wrapper


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database>"


def require_existing_database(settings: Settings) -> None:
    """Fail with one line when the SQLite file does not exist: opening it would create an empty
    database (and a command that only reads must never create files)."""
    path = settings.sqlite_file
    if path is not None and not path.is_file():
        fail(f"database {path} does not exist; run `broker migrate` first (or check "
             "database.url / --config)")


def open_context(settings: Settings) -> Any:
    """A BrokerContext on a database whose schema is at head (else one clear error)."""
    from sqlalchemy.exc import SQLAlchemyError

    from broker.service.context import BrokerContext
    from broker.store import migrate

    require_existing_database(settings)
    try:
        ctx = BrokerContext(settings)
        current = migrate.current_revision(ctx.db.engine)
    except SQLAlchemyError as exc:
        fail(f"database {redact(settings.database_url)}: {first_line(exc)}")
    except BrokerError as exc:
        fail(exc.message)
    if current != migrate.head_revision():
        fail(f"database {redact(settings.database_url)} is at schema revision "
             f"{current or 'none'}; run `broker migrate` first")
    try:
        ctx.catalogue  # noqa: B018 (load now: a bad catalogue is a one-line error here)
    except BrokerError as exc:
        fail(exc.message)
    return ctx


def run_tx(ctx: Any, fn: Callable[[Any], T]) -> T:
    """Run ``fn(session)`` in one transaction; expected failures become one-line errors."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return ctx.db.transaction(fn)
    except BrokerError as exc:
        fail(exc.message)
    except SQLAlchemyError as exc:
        fail(f"database error: {first_line(exc)}")
