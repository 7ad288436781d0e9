"""`broker admin …`: admin operations from the command line, straight on the database.

Each command runs the same service functions as the admin API, in one transaction, and writes
the same audit events (actor ``cli:<user>``). Output is a human table, or JSON with --json.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from broker.cli_common import common_options, fail, open_context, run_tx
from broker.config import Settings


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no passwd entry in some containers
        return "cli"


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for r in rows:
        click.echo("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))


def emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        human()


@click.group()
def admin() -> None:
    """Manage directories, trust, users, WorkSpaces, registration codes and admin tokens."""


@admin.command("apply")
@common_options
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def apply_cmd(settings: Settings, file: Path, as_json: bool) -> None:
    """Create or update the directories in a declarative FILE.toml (idempotent)."""
    from broker.service import directories

    ctx = open_context(settings)
    loaded = run_guarded(lambda: directories.load_file(file, set(ctx.catalogue.region_ids())))
    result = run_tx(ctx, lambda s: directories.apply_loaded(
        s, loaded, catalogue=ctx.catalogue, actor=cli_actor(), now=ctx.now()))

    def human() -> None:
        for d in result.directories:
            click.echo(f"directory {d['id']} ({d['region']}): {d['changes']} change(s)")
            for code in d["registration_codes"]:
                click.echo(f"  registration code: {code}")
        if not result.changes:
            click.echo("nothing to change")

    emit(result.as_json(), as_json, human)


@admin.command("export")
@common_options
@click.argument("directory_ids", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the file here (PEM files go to <name>-pki/ beside it); "
                   "default: standard output with PEM files under ./<directory>-pki/.")
def export_cmd(settings: Settings, directory_ids: tuple[str, ...], output: Path | None) -> None:
    """Write DIRECTORY … back in the declarative file format."""
    from broker.service import directories

    ctx = open_context(settings)
    base = (output.parent if output else Path.cwd()).resolve()
    stem = output.stem if output else "-".join(directory_ids)
    pki_dir = base / f"{stem}-pki"
    docs = run_tx(ctx, lambda s: [directories.export_directory(s, d, pki_dir, base)
                                  for d in directory_ids])
    text = directories.export_text(docs)
    if output:
        output.write_text(text)
        click.echo(f"wrote {output} (certificates and CRLs in {pki_dir})", err=True)
    else:
        sys.stdout.write(text)


def run_guarded(fn: Callable[[], Any]) -> Any:
    from broker.errors import BrokerError

    try:
        return fn()
    except BrokerError as exc:
        fail(exc.message)


# --------------------------------------------------------------------------- tokens

@admin.group()
def token() -> None:
    """Admin API tokens (stored hashed; the secret is shown once)."""


@token.command("create")
@common_options
@click.option("--name", required=True, help="A name to recognise the token by in audit events.")
@click.option("--scope", type=click.Choice(["read", "write"]), default="write",
              show_default=True)
@click.option("--json", "as_json", is_flag=True)
def token_create(settings: Settings, name: str, scope: str, as_json: bool) -> None:
    """Create an admin token and print its secret once."""
    from broker.service import admin_tokens

    ctx = open_context(settings)
    row, secret = run_tx(ctx, lambda s: admin_tokens.create(s, name, scope, cli_actor()))
    emit({"name": row.name, "scope": row.scope, "token": secret}, as_json,
         lambda: click.echo(f"admin token {row.name!r} ({row.scope}): {secret}\n"
                            "Store it now: it is not shown again."))


@token.command("list")
@common_options
@click.option("--json", "as_json", is_flag=True)
def token_list(settings: Settings, as_json: bool) -> None:
    """List admin tokens (names and scopes, never secrets)."""
    from broker.service import admin_tokens

    ctx = open_context(settings)
    rows = run_tx(ctx, lambda s: [
        {"name": t.name, "scope": t.scope, "created_at": t.created_at.isoformat(),
         "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
         "revoked": t.revoked_at is not None} for t in admin_tokens.list_tokens(s)])
    emit(rows, as_json, lambda: print_table(rows, ["name", "scope", "created_at",
                                                   "last_used_at", "revoked"]))


@token.command("revoke")
@common_options
@click.option("--name", required=True)
def token_revoke(settings: Settings, name: str) -> None:
    """Revoke an admin token at once."""
    from broker.service import admin_tokens

    ctx = open_context(settings)
    run_tx(ctx, lambda s: admin_tokens.revoke(s, name, cli_actor()))
    click.echo(f"admin token {name!r} revoked")
