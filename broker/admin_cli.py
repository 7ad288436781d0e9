"""`broker admin …`: admin operations from the command line, straight on the database.

The resource commands are generated from the resource declarations in
:mod:`broker.admin` — the same declarations the admin API is generated from — so the
CLI has the API's names (``registration-codes``, ``audit-events``; ``codes`` and ``audit`` stay
as aliases), its fields, choices (case-insensitive), limits and validation (an id the API
refuses, the CLI refuses with the same message). Each command runs the same operation as the
API route in one transaction and writes the same audit events (actor ``cli:<user>``).

Output is human (tables with ``-`` for a missing value, ``key: value`` records, a readable line
for each change, warnings on standard error) or JSON with --json. A directory-scoped command
takes the directory as its first argument or as ``--directory`` (the same option the list
filters use).
"""

from __future__ import annotations

import base64
import getpass
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from broker import kinds
from broker.admin.fields import REQUIRED, Field
from broker.admin.framework import Call, Operation, Resource
from broker.admin.pagination import Filter, Page
from broker.cli_common import EXIT_USAGE, common_options, fail, open_context, run_tx
from broker.config import Settings

MISSING = "-"


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no passwd entry in some containers
        return "cli"


# --------------------------------------------------------------------------- output

def show(value: Any) -> str:
    """A value as a human reads it: ``-`` when missing, true/false, comma-joined lists."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(show(v) for v in value) if value else MISSING
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)
    return str(value)


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"smart_card": {"pre_session": True}}`` → ``{"smart_card.pre_session": True}``."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict) and key != "details":
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    flat = [flatten(r) for r in rows]
    heads = {c: c.rsplit(".", 1)[-1].upper() for c in columns}
    widths = {c: max(len(heads[c]), *(len(show(r.get(c))) for r in flat)) for c in columns}
    click.echo("  ".join(heads[c].ljust(widths[c]) for c in columns).rstrip())
    for r in flat:
        click.echo("  ".join(show(r.get(c)).ljust(widths[c]) for c in columns).rstrip())


def print_record(record: dict[str, Any]) -> None:
    for key, value in flatten(record).items():
        if key != "warnings":
            click.echo(f"  {key}: {show(value)}")


def print_warnings(subject: str, warnings: list[Any]) -> None:
    """Policy warnings ({code, field, message}) or plain sentences, one line each."""
    for w in warnings:
        if isinstance(w, dict):
            click.echo(f"warning: {subject}{w['field']}: {w['message']} ({w['code']})",
                       err=True)
        else:
            click.echo(f"warning: {subject}{w}", err=True)


def emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))
    else:
        human()


def run_guarded(fn: Callable[[], Any]) -> Any:
    from broker.errors import BrokerError

    try:
        return fn()
    except BrokerError as exc:
        fail(exc.message)


@click.group()
def admin() -> None:
    """Manage directories, trust, users, WorkSpaces, registration codes and admin tokens."""


# --------------------------------------------------------------------------- apply / export

class _RolledBack(Exception):
    """Carries a dry run's result out of the transaction it rolls back."""

    def __init__(self, result: Any) -> None:
        super().__init__("dry run")
        self.result = result


def _apply(ctx: Any, loaded: Any, *, prune: bool, dry_run: bool) -> Any:
    from broker.service import directories

    def work(session: Any) -> Any:
        result = directories.apply_loaded(session, loaded, catalogue=ctx.catalogue,
                                          actor=cli_actor(), now=ctx.now(), prune=prune,
                                          dry_run=dry_run)
        if dry_run:
            raise _RolledBack(result)
        return result

    directories.check_ldap_owners(loaded, ctx.ldap)
    try:
        return run_tx(ctx, work)
    except _RolledBack as done:
        return done.result


def _removals(result: Any) -> list[str]:
    return [f"{d['id']}: {c}" for d in result.directories for c in d["changed"]
            if c.endswith(" revoked") or " removed" in c]


@admin.command("apply")
@common_options
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--dry-run", is_flag=True,
              help="Show what would change (the diff) and change nothing.")
@click.option("--prune", is_flag=True,
              help="Also remove what the file's directories no longer list (users, WorkSpaces, "
                   "trust, CRLs, fixed codes); directories absent from the file are kept.")
@click.option("--yes", is_flag=True, help="Do not ask before --prune removes anything.")
def apply_cmd(settings: Settings, file: Path, as_json: bool, dry_run: bool, prune: bool,
              yes: bool) -> None:
    """Create or update the directories in a declarative FILE.toml (idempotent)."""
    from broker.service import directories

    ctx = open_context(settings)
    loaded = run_guarded(lambda: directories.load_file(file, set(ctx.catalogue.region_ids())))
    if prune and not dry_run and not yes:
        removals = _removals(_apply(ctx, loaded, prune=True, dry_run=True))
        if removals:
            click.echo("--prune would remove:", err=True)
            for line in removals:
                click.echo(f"  {line}", err=True)
            click.confirm("Remove these?", abort=True, err=True)
    result = _apply(ctx, loaded, prune=prune, dry_run=dry_run)

    def human() -> None:
        for d in result.directories:
            count = d["changes"]
            click.echo(f"directory {d['id']} ({d['region']}): "
                       f"{count} change{'' if count == 1 else 's'}"
                       f"{' (dry run)' if dry_run and count else ''}")
            for change in d["changed"]:
                click.echo(f"  {'would: ' if dry_run else ''}{change}")
            for code in d["registration_codes"]:
                click.echo(f"  registration code: {code}")
            print_warnings(f"{d['id']}: ", d["warnings"])
        if not result.changes:
            click.echo("nothing to change")
        elif dry_run:
            click.echo("dry run: nothing was changed")

    out = result.as_json()
    if dry_run:
        out["dry_run"] = True
    emit(out, as_json, human)


@admin.command("export")
@common_options
@click.argument("directory_ids", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the file here (PEM files go to <name>-pki/ beside it); "
                   "default: standard output with PEM files under ./<directory>-pki/.")
@click.option("--no-codes", is_flag=True,
              help="Write how many registration codes each directory has, not the codes "
                   "(which are live). The default from version 1.0.")
def export_cmd(settings: Settings, directory_ids: tuple[str, ...], output: Path | None,
               no_codes: bool) -> None:
    """Write DIRECTORY … back in the declarative file format."""
    from broker.private_files import UnsafePathError, write_private
    from broker.service import directory_export

    ctx = open_context(settings)
    base = (output.parent if output else Path.cwd()).resolve()
    stem = output.stem if output else "-".join(directory_ids)
    pki_dir = base / f"{stem}-pki"
    try:
        docs = run_tx(ctx, lambda s: [directory_export.export_directory(s, d, pki_dir, base,
                                                                   codes=not no_codes)
                                      for d in directory_ids])
        text = directory_export.export_text(docs)
        if output:
            # registration codes and password hashes: the owner's only, from the first byte
            write_private(output, text.encode())
    except OSError as exc:
        fail(f"cannot write the export to {exc.filename or output}: {exc.strerror or exc}")
    except UnsafePathError as exc:  # e.g. a folder other users may write
        fail(exc.message)
    if output:
        click.echo(f"wrote {output} (certificates and CRLs in {pki_dir})", err=True)
    else:
        sys.stdout.write(text)
    live = sum(len(d["registration_codes"]) for d in docs
               if isinstance(d["registration_codes"], list))
    if live:
        click.echo(f"warning: the export holds {live} live registration code"
                   f"{'' if live == 1 else 's'}: anyone with it can register clients; keep it "
                   "secret, or export with --no-codes (the default from version 1.0)", err=True)


# --------------------------------------------------------------------------- tokens

@admin.group()
def token() -> None:
    """Admin API tokens (stored hashed; the secret is shown once)."""


@token.command("create")
@common_options
@click.option("--name", required=True, help="A name to recognise the token by in audit events.")
@click.option("--scope", type=click.Choice(kinds.values(kinds.Scope), case_sensitive=False),
              default="write", show_default=True,
              help="read: list and get only; write: also change.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def token_create(settings: Settings, name: str, scope: str, as_json: bool) -> None:
    """Create an admin token and print its secret once."""
    from broker.service import admin_tokens

    ctx = open_context(settings)
    row, secret = run_tx(ctx, lambda s: admin_tokens.create(s, name, scope, cli_actor()))
    emit({"name": row.name, "scope": row.scope, "token": secret}, as_json,
         lambda: click.echo(f"admin token {row.name} ({row.scope}): {secret}\n"
                            "Store it now: it is not shown again."))


@token.command("list")
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
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
@click.option("--name", required=True, help="The token's name.")
def token_revoke(settings: Settings, name: str) -> None:
    """Revoke an admin token at once."""
    from broker.service import admin_tokens

    ctx = open_context(settings)
    run_tx(ctx, lambda s: admin_tokens.revoke(s, name, cli_actor()))
    click.echo(f"admin token {name} revoked")


# --------------------------------------------------------------------------- generated commands

def _option_name(f: Field) -> str:
    return (f.cli.name or f.name).replace("_", "-")


def _field_option(f: Field, *, create: bool) -> click.Option:
    """The option that sets ``f`` (its label and help from the declaration)."""
    name = _option_name(f)
    help_text = f.help
    if create and f.default is not REQUIRED and f.default is not None:
        help_text += f" [default: {show(f.default)}]"
    if f.cli.input == "stdin":
        return click.Option([f"--{name}", f.name], is_flag=True, default=False,
                            help=help_text + " Read from standard input.")
    if f.type is bool:
        off = f.cli.off or f"no-{name}"
        return click.Option([f"--{name}/--{off}", f.name], default=None, help=help_text)
    required = create and f.default is REQUIRED and not f.nullable
    if f.is_list:
        return click.Option([f"--{name}", f.name], required=required,
                            help=help_text + f" Comma-separated: {','.join(f.choices)}.")
    if f.choices:
        ptype: Any = click.Choice(f.choices, case_sensitive=False)
    elif f.type is int:
        ptype = click.IntRange(f.limits.get("ge"), f.limits.get("le"))
    else:
        ptype = str
    return click.Option([f"--{name}", f.name], type=ptype, required=required, help=help_text)


def _filter_option(flt: Filter) -> click.Option:
    name = (flt.cli or flt.name).replace("_", "-")
    if flt.type is bool:
        return click.Option([f"--{name}/--no-{name}", flt.name], default=None, help=flt.help)
    ptype: Any = click.Choice(flt.choices, case_sensitive=False) if flt.choices else str
    return click.Option([f"--{name}", flt.name], type=ptype, help=flt.help)


def _positionals(resource: Resource, op: Operation) -> tuple[list[str], list[Field]]:
    """The path parameters and the positional body fields of ``op``, in order."""
    fields = [f for f in resource.body_fields(op) if f.cli.positional
              and (op.body != "update")]
    return op.path_params, fields


def _read_input(f: Field, value: Any) -> Any:
    if f.cli.input == "stdin":
        if not value:
            return None
        text = sys.stdin.readline().rstrip("\r\n")
        if not text:
            fail(f"--{_option_name(f)}: nothing on standard input", EXIT_USAGE)
        return text
    if f.cli.input in ("file", "file_b64"):
        path = Path(value)
        try:
            data = path.read_bytes()
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror or exc}", EXIT_USAGE)
        if f.cli.input == "file_b64" and b"-----BEGIN" not in data:
            return base64.b64encode(data).decode()
        return data.decode("ascii", "replace")
    if f.is_list and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _when(value: str, option: str) -> datetime:
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option} must be an ISO 8601 time, e.g. 2026-01-31T12:00:00Z", EXIT_USAGE)
    if when.tzinfo is None:
        fail(f"{option} needs a time zone, e.g. 2026-01-31T12:00:00Z", EXIT_USAGE)
    return when


class _Safe(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return MISSING


def _human(resource: Resource, op: Operation, result: Any, path: dict[str, str]) -> None:
    record = result if isinstance(result, dict) and op.out == "item" else {}
    if op.out == "page":
        print_table(result["items"], resource.list_columns)
        if result.get("next_cursor"):
            click.echo(f"(more: --cursor {result['next_cursor']})", err=True)
        return
    if op.out == "items":
        if op.message:
            for item in result:
                click.echo(op.message.format_map(_Safe({**path, **item})))
        else:
            print_table(result, resource.list_columns)
        return
    if op.message:
        click.echo(op.message.format_map(_Safe({**path, **{k: show(v) for k, v in
                                                            record.items()}})))
    if record and op.name not in ("rotate", "revoke"):
        print_record(record)


def build_command(resource: Resource, op: Operation) -> click.Command:
    """The ``broker admin RESOURCE OP`` command for one declared operation."""
    params_in_path, positional_fields = _positionals(resource, op)
    by_directory = params_in_path[:1] == ["directory_id"] and resource.name != "directories"
    if by_directory:
        params_in_path = params_in_path[1:]
    names = [p.upper() for p in params_in_path] + [
        f"{resource.singular}_id".upper() if f.name == "id"
        else (f.cli.name or f.name).upper().replace("-", "_") for f in positional_fields]
    params: list[click.Parameter] = []
    body_fields = [f for f in resource.body_fields(op) if f not in positional_fields]
    # Resources that name their directory in the body or a filter (WorkSpaces, codes, users
    # of the list filters) take it as the first argument too, as the README writes them.
    directory_first = not by_directory and resource.name != "directories" and (
        any(f.name == "directory" for f in body_fields)
        or any(flt.name == "directory" for flt in op.filters))
    if by_directory:
        params.append(click.Argument(["args"], nargs=-1, metavar=" ".join(
            ["[DIRECTORY]", *names])))
        params.append(click.Option(["--directory", "directory_opt"], help=(
            "The directory (or give it as the first argument).")))
    else:
        params.append(click.Argument(["args"], nargs=-1, metavar=" ".join(
            (["[DIRECTORY]"] if directory_first else []) + names)))
    params += [_field_option(f, create=op.body != "update") for f in body_fields]
    directory_required = False
    for p in params:
        if directory_first and isinstance(p, click.Option) and p.name == "directory" \
                and p.required:
            p.required, directory_required = False, True  # checked below: it may be args[0]
    nullable = [f.name for f in body_fields if f.nullable] if op.body == "update" else []
    if nullable:
        params.append(click.Option(["--clear"], multiple=True,
                                   type=click.Choice(nullable, case_sensitive=False),
                                   help="Clear a field (repeatable)."))
    params += [_filter_option(flt) for flt in op.filters]
    if op.out == "page":
        params += [
            click.Option(["--limit"], type=click.IntRange(1, 500), default=50, show_default=True,
                         help="Rows per page."),
            click.Option(["--cursor"], help="next_cursor of the previous page."),
            click.Option(["--offset"], type=click.IntRange(0), help="Skip this many rows.")]
    if op.out is not None:
        params.append(click.Option(["--json", "as_json"], is_flag=True, help="Print JSON."))
    if op.confirm:
        params.append(click.Option(["--yes"], is_flag=True, help="Do not ask for confirmation."))

    def callback(settings: Settings, args: tuple[str, ...], **options: Any) -> None:
        args = tuple(args)
        if by_directory:
            given = options.pop("directory_opt", None)
            if given is None and len(args) == len(names) + 1:
                given, args = args[0], args[1:]
            if given is None:
                fail("name the directory (first argument or --directory)", EXIT_USAGE)
            if len(args) != len(names):
                fail(f"expected {' '.join(names)} after the directory", EXIT_USAGE)
            path = {"directory_id": given}
        elif directory_first and len(args) == len(names) + 1:
            if options.get("directory") is not None:
                fail("name the directory once (first argument or --directory)", EXIT_USAGE)
            options["directory"], args = args[0], args[1:]
            path = {}
        elif directory_required and options.get("directory") is None:
            fail("name the directory (first argument or --directory)", EXIT_USAGE)
        elif len(args) != len(names):
            wanted = " ".join((["[DIRECTORY]"] if directory_first else []) + names)
            fail(f"expected {wanted or 'no arguments'}, got {len(args)} argument(s)",
                 EXIT_USAGE)
        else:
            path = {}
        path.update(zip(params_in_path, args[:len(params_in_path)], strict=True))
        body: dict[str, Any] = {}
        for f, value in zip(positional_fields, args[len(params_in_path):], strict=True):
            body[f.name] = _read_input(f, value)
        for f in body_fields:
            value = options.pop(f.name, None)
            if value is None or (f.cli.input == "stdin" and not value):
                continue  # not given (a stdin flag not set)
            body[f.name] = _read_input(f, value)
        for name in options.pop("clear", ()) or ():
            body[name] = None
        if op.body is not None:
            body = run_guarded(lambda: _nest(resource, op, body))
        filters = {flt.name: _when(v, f"--{flt.cli or flt.name}") if flt.type is datetime
                   else v for flt in op.filters
                   if (v := options.pop(flt.name, None)) is not None}
        page = run_guarded(lambda: Page(limit=options.pop("limit", 50),
                                        cursor=options.pop("cursor", None),
                                        offset=options.pop("offset", None)))
        if op.confirm and not options.pop("yes", False):
            click.confirm(op.confirm.format_map(_Safe(path)), abort=True)
        as_json = options.pop("as_json", False)
        ctx = open_context(settings)
        call = Call(cli_actor(), path, body, filters, page)
        result = run_tx(ctx, lambda s: op.run(s, ctx, call))
        data = {"items": result} if op.out == "items" else result
        for item in result if isinstance(result, list) else [result]:
            if isinstance(item, dict) and item.get("warnings"):
                name = item.get("id") or item.get("fingerprint", "")[:16]
                print_warnings(f"{resource.singular} {name}: ", item["warnings"])
        if op.out is None:
            click.echo(op.message.format_map(_Safe(path)) if op.message else "done")
            return
        emit(data, as_json, lambda: _human(resource, op, result, path))

    summary = op.summary.split(" (")[0]
    wrapped = common_options(callback)
    # common_options declares --config/--database-url the decorator way; take them from there.
    shared = list(reversed(getattr(wrapped, "__click_params__", [])))
    return click.Command(op.name, callback=wrapped, params=shared + params, help=op.summary,
                         short_help=summary)


def _nest(resource: Resource, op: Operation, flat: dict[str, Any]) -> dict[str, Any]:
    """CLI values (flat, by field name) as the body the API takes (nested groups), validated
    by the operation's declared model — the same rule as the API."""
    body: dict[str, Any] = {}
    for f in resource.body_fields(op):
        if f.name in flat:
            (body.setdefault(f.group, {}) if f.group else body)[f.name] = flat[f.name]
    return resource.parse_body(op, body)


def _register() -> None:
    from broker.admin.registry import RESOURCES

    for resource in RESOURCES.values():
        group = click.Group(resource.name, help=resource.help)
        for op in resource.operations:
            group.add_command(build_command(resource, op))
        admin.add_command(group)
        for alias in resource.cli_aliases:
            hidden = click.Group(alias, help=f"Alias of {resource.name}.", hidden=True,
                                 commands=group.commands)
            admin.add_command(hidden)


_register()


@click.command("test-lookup")
@common_options
@click.argument("directory_id")
@click.option("--certificate", "certificate", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The certificate to map (PEM or DER file).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def test_lookup_cmd(settings: Settings, directory_id: str, certificate: Path,
                    as_json: bool) -> None:
    """Map a certificate to a user of DIRECTORY as a login would (no chain check), and say
    which rule and directory entry decided; the refusal code and exit 1 otherwise."""
    from broker.admin.ldap_users import test_lookup
    from broker.errors import BrokerError

    try:
        data = certificate.read_bytes()
    except OSError as exc:
        fail(f"cannot read {certificate}: {exc.strerror or exc}", EXIT_USAGE)
    ctx = open_context(settings)
    try:
        found = test_lookup(ctx, directory_id, data)
    except BrokerError as exc:
        details = {k: v for k, v in exc.details.items()
                   if k in ("rule", "dn", "rules", "dns", "groups")}
        if as_json:
            click.echo(json.dumps({"error": {"code": str(exc.code), "message": exc.message,
                                             "details": details}}, indent=2))
        else:
            click.echo(f"refused: {exc.code}: {exc.message}", err=True)
            for k, v in details.items():
                click.echo(f"  {k}: {show(v)}", err=True)
        sys.exit(1)
    emit(found, as_json, lambda: click.echo(
        f"{found['user']} (rule {found['rule'] or '-'}, entry {found['dn'] or '-'})"))


_directories = admin.commands["directories"]
assert isinstance(_directories, click.Group)
_directories.add_command(test_lookup_cmd)
