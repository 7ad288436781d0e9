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
    try:
        docs = run_tx(ctx, lambda s: [directories.export_directory(s, d, pki_dir, base)
                                      for d in directory_ids])
        text = directories.export_text(docs)
        if output:
            output.write_text(text)
    except OSError as exc:
        fail(f"cannot write the export to {exc.filename or output}: {exc.strerror or exc}")
    if output:
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


# --------------------------------------------------------------------------- resources
# Each command below runs one function of broker.service.admin (the same the admin API runs) in
# one transaction, with the actor cli:<user>.

def _run(settings: Settings, fn: Callable[[Any, Any], Any]) -> Any:
    ctx = open_context(settings)
    return run_tx(ctx, lambda s: fn(s, ctx))


def _page(limit: int, cursor: str | None, offset: int | None) -> Any:
    from broker.service import admin as svc

    return run_guarded(lambda: svc.Page(limit=limit, cursor=cursor, offset=offset))


def page_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--offset", type=int, default=None, help="Skip this many rows.")(fn)
    fn = click.option("--cursor", default=None, help="next_cursor of the previous page.")(fn)
    fn = click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)(fn)
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)


def emit_page(page: dict[str, Any], as_json: bool, columns: list[str],
              flatten: Callable[[dict[str, Any]], dict[str, Any]] = lambda r: r) -> None:
    def human() -> None:
        print_table([_blank_nones(flatten(r)) for r in page["items"]], columns)
        if page.get("next_cursor"):
            click.echo(f"(more: --cursor {page['next_cursor']})", err=True)

    emit(page, as_json, human)


def _blank_nones(row: dict[str, Any]) -> dict[str, Any]:
    return {k: "-" if v is None else v for k, v in row.items()}


def emit_record(record: dict[str, Any] | None, as_json: bool, message: str) -> None:
    def human() -> None:
        click.echo(message)
        for key, value in (record or {}).items():
            click.echo(f"  {key}: {'-' if value is None else value}")

    emit(record, as_json, human)


def _flat_directory(d: dict[str, Any]) -> dict[str, Any]:
    sc, rev = d["smart_card"], d["revocation"]
    return {**d, "pre_session": sc["pre_session"], "in_session": sc["in_session"],
            "removal_action": sc["removal_action"],
            "revocation": f"crl={rev['crl']} ocsp={rev['ocsp']} {rev['fail_mode']}",
            "certmap": ",".join(d["certmap"])}


def _certmap(value: str | None) -> list[str] | None:
    if value is None:
        return None
    rules = [r.strip() for r in value.split(",") if r.strip()]
    bad = [r for r in rules if r not in ("upn", "email", "subject", "fingerprint")]
    if bad or not rules or len(set(rules)) != len(rules):
        fail("--certmap takes distinct rules from upn,email,subject,fingerprint", 2)
    return rules


def _directory_fields(name: str | None, region: str | None, password_login: bool | None,
                      pre_session: bool | None, in_session: bool | None,
                      removal_action: str | None, crl: bool | None, ocsp: bool | None,
                      fail_mode: str | None, certmap: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {k: v for k, v in (("name", name), ("region", region),
                                                ("password_login", password_login),
                                                ("certmap", _certmap(certmap)))
                              if v is not None}
    sc = {k: v for k, v in (("pre_session", pre_session), ("in_session", in_session),
                            ("removal_action", removal_action)) if v is not None}
    rev = {k: v for k, v in (("crl", crl), ("ocsp", ocsp), ("fail_mode", fail_mode))
           if v is not None}
    if sc:
        fields["smart_card"] = sc
    if rev:
        fields["revocation"] = rev
    return fields


def directory_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed([
        click.option("--password-login/--no-password-login", default=None),
        click.option("--pre-session/--no-pre-session", default=None,
                     help="Smart-card login before the session."),
        click.option("--in-session/--no-in-session", default=None,
                     help="Smart cards inside the session."),
        click.option("--removal-action", type=click.Choice(["none", "lock", "disconnect"])),
        click.option("--crl/--no-crl", default=None, help="Check CRLs."),
        click.option("--ocsp/--no-ocsp", default=None, help="Check OCSP."),
        click.option("--fail-mode", type=click.Choice(["soft", "hard"])),
        click.option("--certmap", help="Comma-separated rules, e.g. upn,email."),
    ]):
        fn = decorator(fn)
    return fn


@admin.group("directories")
def directories_group() -> None:
    """Directories: region, smart-card and revocation settings, certmap, password login."""


_DIRECTORY_COLUMNS = ["id", "name", "region", "password_login", "pre_session", "in_session",
                      "removal_action", "revocation", "certmap"]


@directories_group.command("list")
@common_options
@page_options
@click.option("--region")
def directories_list(settings: Settings, as_json: bool, limit: int, cursor: str | None,
                     offset: int | None, region: str | None) -> None:
    """List directories."""
    from broker.service import admin as svc

    page = _run(settings, lambda s, ctx: svc.list_directories(
        s, _page(limit, cursor, offset), region=region))
    emit_page(page, as_json, _DIRECTORY_COLUMNS, _flat_directory)


@directories_group.command("get")
@common_options
@json_option
@click.argument("directory_id")
def directories_get(settings: Settings, as_json: bool, directory_id: str) -> None:
    """Show one directory."""
    from broker.service import admin as svc

    d = _run(settings, lambda s, ctx: svc.get_directory(s, directory_id))
    emit(d, as_json, lambda: print_table([_flat_directory(d)], _DIRECTORY_COLUMNS))


@directories_group.command("create")
@common_options
@json_option
@click.argument("directory_id")
@click.option("--name", required=True)
@click.option("--region", required=True, help="A region id from the region catalogue.")
@directory_options
def directories_create(settings: Settings, as_json: bool, directory_id: str,
                       **options: Any) -> None:
    """Create a directory."""
    from broker.service import admin as svc

    fields = {"id": directory_id, **_directory_fields(**options)}
    d = _run(settings, lambda s, ctx: svc.create_directory(s, ctx, fields, cli_actor()))
    emit_record(d, as_json, f"directory {directory_id} created")


@directories_group.command("update")
@common_options
@json_option
@click.argument("directory_id")
@click.option("--name")
@click.option("--region")
@directory_options
def directories_update(settings: Settings, as_json: bool, directory_id: str,
                       **options: Any) -> None:
    """Change a directory (only the options given)."""
    from broker.service import admin as svc

    fields = _directory_fields(**options)
    d = _run(settings, lambda s, ctx: svc.update_directory(s, ctx, directory_id, fields,
                                                           cli_actor()))
    emit_record(d, as_json, f"directory {directory_id} updated")


@directories_group.command("delete")
@common_options
@click.argument("directory_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def directories_delete(settings: Settings, directory_id: str, yes: bool) -> None:
    """Delete a directory with its users, WorkSpaces, trust, codes and sessions."""
    from broker.service import admin as svc

    if not yes:
        click.confirm(f"Delete directory {directory_id} and everything in it?", abort=True)
    _run(settings, lambda s, ctx: svc.delete_directory(s, directory_id, cli_actor()))
    click.echo(f"directory {directory_id} deleted")


# --------------------------------------------------------------------------- trust and CRLs

@admin.group("trust")
def trust_group() -> None:
    """Trust anchors and intermediate CA certificates of a directory."""


_TRUST_COLUMNS = ["kind", "fingerprint", "not_after", "subject"]


@trust_group.command("add")
@common_options
@json_option
@click.argument("directory_id")
@click.argument("pem_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(["anchor", "intermediate"]),
              help="Default: self-issued certificates are anchors, others intermediates.")
def trust_add(settings: Settings, as_json: bool, directory_id: str, pem_file: Path,
              kind: str | None) -> None:
    """Add the CA certificate(s) in PEM_FILE."""
    from broker.service import admin as svc

    text = pem_file.read_bytes().decode("ascii", "replace")
    added = _run(settings, lambda s, ctx: svc.add_trust(s, directory_id, text, kind,
                                                         cli_actor()))
    emit({"items": added}, as_json, lambda: print_table(added, _TRUST_COLUMNS))


@trust_group.command("list")
@common_options
@page_options
@click.argument("directory_id")
@click.option("--kind", type=click.Choice(["anchor", "intermediate"]))
def trust_list(settings: Settings, as_json: bool, limit: int, cursor: str | None,
               offset: int | None, directory_id: str, kind: str | None) -> None:
    """List trusted certificates."""
    from broker.service import admin as svc

    page = _run(settings, lambda s, ctx: svc.list_trust(s, directory_id,
                                                        _page(limit, cursor, offset), kind=kind))
    emit_page(page, as_json, _TRUST_COLUMNS)


@trust_group.command("remove")
@common_options
@click.argument("directory_id")
@click.argument("fingerprint")
def trust_remove(settings: Settings, directory_id: str, fingerprint: str) -> None:
    """Remove a trusted certificate by SHA-256 fingerprint."""
    from broker.service import admin as svc

    _run(settings, lambda s, ctx: svc.remove_trust(s, directory_id, fingerprint, cli_actor()))
    click.echo(f"certificate {fingerprint} removed from {directory_id}")


@admin.group("crls")
def crls_group() -> None:
    """Certificate revocation lists of a directory."""


_CRL_COLUMNS = ["fingerprint", "this_update", "next_update", "issuer"]


@crls_group.command("add")
@common_options
@json_option
@click.argument("directory_id")
@click.argument("crl_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def crls_add(settings: Settings, as_json: bool, directory_id: str, crl_file: Path) -> None:
    """Load a CRL (PEM or DER) from CRL_FILE."""
    import base64

    from broker.service import admin as svc

    data = crl_file.read_bytes()
    text = (data.decode("ascii", "replace") if b"-----BEGIN" in data
            else base64.b64encode(data).decode())
    row = _run(settings, lambda s, ctx: svc.add_crl(s, directory_id, text, cli_actor()))
    emit_record(row, as_json, f"CRL {row['fingerprint']} added to {directory_id}")


@crls_group.command("list")
@common_options
@page_options
@click.argument("directory_id")
def crls_list(settings: Settings, as_json: bool, limit: int, cursor: str | None,
              offset: int | None, directory_id: str) -> None:
    """List CRLs."""
    from broker.service import admin as svc

    page = _run(settings, lambda s, ctx: svc.list_crls(s, directory_id,
                                                       _page(limit, cursor, offset)))
    emit_page(page, as_json, _CRL_COLUMNS)


@crls_group.command("remove")
@common_options
@click.argument("directory_id")
@click.argument("fingerprint")
def crls_remove(settings: Settings, directory_id: str, fingerprint: str) -> None:
    """Remove a CRL by SHA-256 fingerprint."""
    from broker.service import admin as svc

    _run(settings, lambda s, ctx: svc.remove_crl(s, directory_id, fingerprint, cli_actor()))
    click.echo(f"CRL {fingerprint} removed from {directory_id}")


# --------------------------------------------------------------------------- users

@admin.group("users")
def users_group() -> None:
    """Users of a directory."""


_USER_COLUMNS = ["username", "upn", "email", "cert_fingerprint", "has_password", "disabled"]


def _read_password(password_stdin: bool) -> str | None:
    if not password_stdin:
        return None
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        fail("--password-stdin: no password on standard input", 2)
    return value


def user_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed([
        click.option("--upn"), click.option("--email"), click.option("--subject"),
        click.option("--cert-fingerprint", help="SHA-256 of the user's certificate (hex)."),
        click.option("--password-stdin", is_flag=True,
                     help="Read a password from standard input (needs password login)."),
    ]):
        fn = decorator(fn)
    return fn


@users_group.command("list")
@common_options
@page_options
@click.argument("directory_id")
def users_list(settings: Settings, as_json: bool, limit: int, cursor: str | None,
               offset: int | None, directory_id: str) -> None:
    """List users."""
    from broker.service import admin as svc

    page = _run(settings, lambda s, ctx: svc.list_users(s, directory_id,
                                                        _page(limit, cursor, offset)))
    emit_page(page, as_json, _USER_COLUMNS)


@users_group.command("get")
@common_options
@json_option
@click.argument("directory_id")
@click.argument("username")
def users_get(settings: Settings, as_json: bool, directory_id: str, username: str) -> None:
    """Show one user."""
    from broker.service import admin as svc

    u = _run(settings, lambda s, ctx: svc.get_user(s, directory_id, username))
    emit(u, as_json, lambda: print_table([u], _USER_COLUMNS))


def _validated_fingerprint(value: str | None) -> str | None:
    import re

    if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        fail("--cert-fingerprint must be 64 hex digits (SHA-256)", 2)
    return value


@users_group.command("create")
@common_options
@json_option
@click.argument("directory_id")
@click.argument("username")
@user_options
@click.option("--disabled", is_flag=True)
def users_create(settings: Settings, as_json: bool, directory_id: str, username: str,
                 upn: str | None, email: str | None, subject: str | None,
                 cert_fingerprint: str | None, password_stdin: bool, disabled: bool) -> None:
    """Create a user."""
    from broker.service import admin as svc

    fields = {"username": username, "upn": upn, "email": email, "subject": subject,
              "cert_fingerprint": _validated_fingerprint(cert_fingerprint),
              "password": _read_password(password_stdin), "disabled": disabled}
    u = _run(settings, lambda s, ctx: svc.create_user(s, directory_id, fields, cli_actor()))
    emit_record(u, as_json, f"user {username} created in {directory_id}")


@users_group.command("update")
@common_options
@json_option
@click.argument("directory_id")
@click.argument("username")
@user_options
@click.option("--disabled/--enabled", default=None)
@click.option("--clear", multiple=True,
              type=click.Choice(["upn", "email", "subject", "cert_fingerprint", "password"]),
              help="Clear a field (repeatable).")
def users_update(settings: Settings, as_json: bool, directory_id: str, username: str,
                 upn: str | None, email: str | None, subject: str | None,
                 cert_fingerprint: str | None, password_stdin: bool, disabled: bool | None,
                 clear: tuple[str, ...]) -> None:
    """Change a user (only the options given)."""
    from broker.service import admin as svc

    fields: dict[str, Any] = {k: v for k, v in (
        ("upn", upn), ("email", email), ("subject", subject),
        ("cert_fingerprint", _validated_fingerprint(cert_fingerprint)),
        ("password", _read_password(password_stdin)), ("disabled", disabled)) if v is not None}
    fields.update({k: None for k in clear})
    u = _run(settings, lambda s, ctx: svc.update_user(s, directory_id, username, fields,
                                                      cli_actor()))
    emit_record(u, as_json, f"user {username} updated")


@users_group.command("delete")
@common_options
@click.argument("directory_id")
@click.argument("username")
def users_delete(settings: Settings, directory_id: str, username: str) -> None:
    """Delete a user and their WorkSpaces."""
    from broker.service import admin as svc

    _run(settings, lambda s, ctx: svc.delete_user(s, directory_id, username, cli_actor()))
    click.echo(f"user {username} deleted from {directory_id}")


# --------------------------------------------------------------------------- WorkSpaces

@admin.group("workspaces")
def workspaces_group() -> None:
    """WorkSpaces: owner, bundle, protocol, running mode, state; start and stop."""


_WS_COLUMNS = ["id", "directory", "user", "protocol", "running_mode", "state", "bundle"]
_WS_STATES = ["PENDING", "AVAILABLE", "STARTING", "STOPPING", "STOPPED", "ERROR", "UNHEALTHY"]


@workspaces_group.command("list")
@common_options
@page_options
@click.option("--directory")
@click.option("--user")
@click.option("--state", type=click.Choice(_WS_STATES))
@click.option("--protocol", type=click.Choice(["WSP", "PCoIP"]))
def workspaces_list(settings: Settings, as_json: bool, limit: int, cursor: str | None,
                    offset: int | None, directory: str | None, user: str | None,
                    state: str | None, protocol: str | None) -> None:
    """List WorkSpaces."""
    from broker.service import admin as svc

    page = _run(settings, lambda s, ctx: svc.list_workspaces(
        s, _page(limit, cursor, offset), directory=directory, user=user, state=state,
        protocol=protocol))
    emit_page(page, as_json, _WS_COLUMNS)


@workspaces_group.command("get")
@common_options
@json_option
@click.argument("workspace_id")
def workspaces_get(settings: Settings, as_json: bool, workspace_id: str) -> None:
    """Show one WorkSpace."""
    from broker.service import admin as svc

    w = _run(settings, lambda s, ctx: svc.get_workspace(s, workspace_id))
    emit(w, as_json, lambda: print_table([w], _WS_COLUMNS))


@workspaces_group.command("create")
@common_options
@json_option
@click.argument("workspace_id")
@click.option("--directory", required=True)
@click.option("--user", required=True, help="Username of the owner.")
@click.option("--protocol", type=click.Choice(["WSP", "PCoIP"]), required=True)
@click.option("--running-mode", type=click.Choice(["ALWAYS_ON", "AUTO_STOP"]),
              default="AUTO_STOP", show_default=True)
@click.option("--state", type=click.Choice(_WS_STATES), default="STOPPED", show_default=True)
@click.option("--bundle", default="standard", show_default=True)
@click.option("--name")
def workspaces_create(settings: Settings, as_json: bool, workspace_id: str, directory: str,
                      user: str, protocol: str, running_mode: str, state: str, bundle: str,
                      name: str | None) -> None:
    """Create a WorkSpace."""
    from broker.service import admin as svc

    fields = {"id": workspace_id, "directory": directory, "user": user, "protocol": protocol,
              "running_mode": running_mode, "state": state, "bundle": bundle, "name": name}
    w = _run(settings, lambda s, ctx: svc.create_workspace(s, ctx, fields, cli_actor()))
    emit_record(w, as_json, f"WorkSpace {workspace_id} created")


@workspaces_group.command("update")
@common_options
@json_option
@click.argument("workspace_id")
@click.option("--user")
@click.option("--protocol", type=click.Choice(["WSP", "PCoIP"]),
              help="Switching to PCoIP ends its smart-card sessions at once.")
@click.option("--running-mode", type=click.Choice(["ALWAYS_ON", "AUTO_STOP"]))
@click.option("--state", type=click.Choice(_WS_STATES), help="Set a state directly.")
@click.option("--bundle")
@click.option("--name")
def workspaces_update(settings: Settings, as_json: bool, workspace_id: str,
                      **options: Any) -> None:
    """Change a WorkSpace (only the options given)."""
    from broker.service import admin as svc

    fields = {k: v for k, v in options.items() if v is not None}
    w = _run(settings, lambda s, ctx: svc.update_workspace(s, ctx, workspace_id, fields,
                                                           cli_actor()))
    emit_record(w, as_json, f"WorkSpace {workspace_id} updated")


@workspaces_group.command("delete")
@common_options
@click.argument("workspace_id")
def workspaces_delete(settings: Settings, workspace_id: str) -> None:
    """Delete a WorkSpace."""
    from broker.service import admin as svc

    _run(settings, lambda s, ctx: svc.delete_workspace(s, workspace_id, cli_actor()))
    click.echo(f"WorkSpace {workspace_id} deleted")


@workspaces_group.command("start")
@common_options
@json_option
@click.argument("workspace_id")
def workspaces_start(settings: Settings, as_json: bool, workspace_id: str) -> None:
    """Start a stopped WorkSpace."""
    from broker.service import admin as svc

    w = _run(settings, lambda s, ctx: svc.start_workspace(s, ctx, workspace_id, cli_actor()))
    emit_record(w, as_json, f"WorkSpace {workspace_id} is {w['state']}")


@workspaces_group.command("stop")
@common_options
@json_option
@click.argument("workspace_id")
def workspaces_stop(settings: Settings, as_json: bool, workspace_id: str) -> None:
    """Stop an available WorkSpace."""
    from broker.service import admin as svc

    w = _run(settings, lambda s, ctx: svc.stop_workspace(s, ctx, workspace_id, cli_actor()))
    emit_record(w, as_json, f"WorkSpace {workspace_id} is {w['state']}")


# --------------------------------------------------------------------------- registration codes

@admin.group("codes")
def codes_group() -> None:
    """Registration codes: issue, rotate, revoke, list."""


_CODE_COLUMNS = ["code", "directory", "state", "created_at", "rotated_at", "revoked_at"]


@codes_group.command("issue")
@common_options
@json_option
@click.argument("directory_id")
@click.option("--count", type=click.IntRange(1, 100), default=1, show_default=True)
def codes_issue(settings: Settings, as_json: bool, directory_id: str, count: int) -> None:
    """Issue registration codes for a directory."""
    from broker.service import admin as svc

    codes = _run(settings, lambda s, ctx: svc.issue_codes(s, ctx, directory_id, count,
                                                          cli_actor()))
    emit({"items": codes}, as_json, lambda: print_table(codes, _CODE_COLUMNS))


@codes_group.command("rotate")
@common_options
@json_option
@click.argument("code")
def codes_rotate(settings: Settings, as_json: bool, code: str) -> None:
    """Issue a successor; the old code keeps working for the grace period."""
    from broker.service import admin as svc

    new = _run(settings, lambda s, ctx: svc.rotate_code(s, ctx, code, cli_actor()))
    emit(new, as_json, lambda: click.echo(f"new registration code: {new['code']}"))


@codes_group.command("revoke")
@common_options
@json_option
@click.argument("code")
def codes_revoke(settings: Settings, as_json: bool, code: str) -> None:
    """Revoke a registration code at once."""
    from broker.service import admin as svc

    row = _run(settings, lambda s, ctx: svc.revoke_code(s, ctx, code, cli_actor()))
    emit(row, as_json, lambda: click.echo(f"registration code {row['code']} revoked"))


@codes_group.command("list")
@common_options
@page_options
@click.option("--directory")
@click.option("--state", type=click.Choice(["active", "rotated", "revoked"]))
def codes_list(settings: Settings, as_json: bool, limit: int, cursor: str | None,
               offset: int | None, directory: str | None, state: str | None) -> None:
    """List registration codes with their state."""
    from broker.service import admin as svc

    page = _run(settings, lambda s, ctx: svc.list_codes(s, _page(limit, cursor, offset),
                                                        directory=directory, state=state))
    emit_page(page, as_json, _CODE_COLUMNS)


# --------------------------------------------------------------------------- sessions, audit

@admin.group("sessions")
def sessions_group() -> None:
    """Desktop sessions: list, terminate."""


_SESSION_COLUMNS = ["id", "directory", "workspace", "auth_method", "protocol", "state",
                    "end_reason", "created_at"]


@sessions_group.command("list")
@common_options
@page_options
@click.option("--directory")
@click.option("--workspace")
@click.option("--user")
@click.option("--state", type=click.Choice(["live", "active", "locked", "ended"]))
@click.option("--auth-method", type=click.Choice(["smart_card", "password"]))
def sessions_list(settings: Settings, as_json: bool, limit: int, cursor: str | None,
                  offset: int | None, directory: str | None, workspace: str | None,
                  user: str | None, state: str | None, auth_method: str | None) -> None:
    """List sessions."""
    from broker.service import admin as svc

    page = _run(settings, lambda s, ctx: svc.list_sessions(
        s, _page(limit, cursor, offset), directory=directory, workspace=workspace, user=user,
        state=state, auth_method=auth_method))
    emit_page(page, as_json, _SESSION_COLUMNS)


@sessions_group.command("terminate")
@common_options
@json_option
@click.argument("session_id")
def sessions_terminate(settings: Settings, as_json: bool, session_id: str) -> None:
    """End a session now; its next heartbeat is told to disconnect."""
    from broker.service import admin as svc

    row = _run(settings, lambda s, ctx: svc.terminate_session(s, ctx, session_id, cli_actor()))
    emit_record(row, as_json, f"session {session_id} terminated")


@admin.group("audit")
def audit_group() -> None:
    """Audit events."""


def _when(value: str | None, option: str) -> Any:
    from datetime import datetime

    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option} must be an ISO 8601 time, e.g. 2026-01-31T12:00:00Z", 2)
    if when.tzinfo is None:
        fail(f"{option} needs a time zone, e.g. 2026-01-31T12:00:00Z", 2)
    return when


@audit_group.command("list")
@common_options
@page_options
@click.option("--directory")
@click.option("--user", "username")
@click.option("--kind", help="An event kind; end with * for a prefix (directory.*).")
@click.option("--outcome", type=click.Choice(["success", "refused", "error", "change"]))
@click.option("--actor")
@click.option("--since", help="ISO 8601 time (inclusive).")
@click.option("--until", help="ISO 8601 time (exclusive).")
def audit_list(settings: Settings, as_json: bool, limit: int, cursor: str | None,
               offset: int | None, directory: str | None, username: str | None,
               kind: str | None, outcome: str | None, actor: str | None, since: str | None,
               until: str | None) -> None:
    """List audit events, newest first."""
    from broker.service import admin as svc

    since_at, until_at = _when(since, "--since"), _when(until, "--until")
    page = _run(settings, lambda s, ctx: svc.list_audit(
        s, _page(limit, cursor, offset), directory=directory, username=username, kind=kind,
        outcome=outcome, actor=actor, since=since_at, until=until_at))
    emit_page(page, as_json, ["id", "at", "kind", "outcome", "reason", "directory", "username",
                              "actor"])
