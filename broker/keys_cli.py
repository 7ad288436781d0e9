"""`broker keys …`: the keys that sign session tickets — list them, rotate them, and export their
public halves for a gateway that verifies tickets itself (docs/deploy/haproxy-gateway.cfg).

A gateway such as HAProxy cannot fetch the JWKS: it reads key files at start-up. The export
writes one PEM public key per slot — ``current.pem`` (signs now), ``next.pem`` (signs after the
next rotation, published ahead so a gateway knows it first) and ``previous.pem`` (the newest
retired key, whose tickets may still be valid) — with ``kids.map`` naming the slot of each key
id and ``issuer.lst`` the broker's ``iss``. An empty slot holds a public key whose private half
was thrown away, so the gateway's configuration never names a missing file.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from broker.cli_common import common_options, fail, open_context, run_tx
from broker.config import Settings

SLOTS = ("current", "next", "previous")


def _iso(at: datetime | None) -> str | None:
    return at.isoformat().replace("+00:00", "Z") if at is not None else None


def _ring_dict(state: Any) -> dict[str, Any]:
    """The slots of a RingState as plain data (read inside the transaction)."""
    from broker.service.tickets import public_pem

    out: dict[str, Any] = {}
    for slot in SLOTS:
        row = getattr(state, slot)
        out[slot] = None if row is None else {
            "kid": row.kid, "signs_from": _iso(row.created_at),
            "retired_at": _iso(row.retired_at), "published_until": _iso(row.expires_at),
            "public_pem": public_pem(row).decode()}
    return out


def _describe(ring: dict[str, Any]) -> list[str]:
    lines = []
    for slot in SLOTS:
        key = ring[slot]
        if key is None:
            lines.append(f"{slot:<9} (none)")
        elif slot == "current":
            lines.append(f"{slot:<9} {key['kid']}  signs since {key['signs_from']}")
        elif slot == "next":
            lines.append(f"{slot:<9} {key['kid']}  signs from {key['signs_from']} "
                         "(or at `broker keys rotate`)")
        else:
            lines.append(f"{slot:<9} {key['kid']}  retired {key['retired_at']}, published "
                         f"until {key['published_until']}")
    return lines


def _emit(ring: dict[str, Any], as_json: bool, extra: dict[str, Any] | None = None) -> None:
    if as_json:
        doc = {slot: ({k: v for k, v in key.items() if k != "public_pem"} if key else None)
               for slot, key in ring.items()}
        click.echo(json.dumps({**doc, **(extra or {})}, indent=2))
    else:
        for line in _describe(ring):
            click.echo(line)


@click.group("keys")
def keys() -> None:
    """Session-ticket signing keys: list, rotate, export for a gateway."""


@keys.command("list")
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_keys(settings: Settings, as_json: bool) -> None:
    """Show the current, next and previous signing keys (making the first ones if none
    exist yet, as the broker would at its first ticket)."""
    ctx = open_context(settings)
    ring = run_tx(ctx, lambda s: _ring_dict(ctx.keyring.state(s, ctx.now())))
    _emit(ring, as_json)


@keys.command("rotate")
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def rotate(settings: Settings, as_json: bool) -> None:
    """Bring the next key in now: it signs, the current one retires (still accepted until its
    tickets have expired) and a new next key is made. Every broker process follows within 30
    seconds; export the gateway keys again afterwards (`broker keys export-gateway`)."""
    from broker.admin_cli import cli_actor
    from broker.service import audit

    ctx = open_context(settings)

    def work(session: Any) -> tuple[dict[str, Any], bool]:
        state, had_next = ctx.keyring.rotate(session, ctx.now())
        audit.insert(session, "keys.rotate", "change", actor=cli_actor(),
                     current=state.current.kid, next=state.next.kid,
                     previous=state.previous.kid if state.previous else None)
        return _ring_dict(state), had_next

    ring, had_next = run_tx(ctx, work)
    _emit(ring, as_json, {"was_published": had_next})
    if not had_next:
        click.echo("warning: the key that now signs was not published before (the ring had no "
                   "next key): export the gateway keys and reload the gateway now", err=True)
    elif not as_json:
        click.echo("gateways loaded with the last export accept tickets of the new current "
                   "key; run `broker keys export-gateway` and reload them to publish the new "
                   "next key")


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` in one step (a gateway reloading meanwhile sees the old or the new
    file, never half of one); public material, so 0644."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _unusable_public_key() -> bytes:
    """A valid public key nobody holds the private half of: fills an empty slot."""
    from joserfc.jwk import ECKey

    return ECKey.generate_key("P-256").as_pem(private=False)


def export_files(ring: dict[str, Any], issuer: str) -> dict[str, bytes]:
    """The files of a gateway export, by name."""
    files: dict[str, bytes] = {}
    kids = []
    for slot in SLOTS:
        key = ring[slot]
        files[f"{slot}.pem"] = key["public_pem"].encode() if key else _unusable_public_key()
        if key:
            kids.append(f"{key['kid']} {slot}\n")
    files["kids.map"] = ("# key id -> slot; written by `broker keys export-gateway`\n"
                         + "".join(kids)).encode()
    files["issuer.lst"] = f"{issuer}\n".encode()
    return files


@keys.command("export-gateway")
@common_options
@click.option("--out", "out", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the key files (made if missing), e.g. /etc/haproxy/ticket-keys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def export_gateway(settings: Settings, out: Path, as_json: bool) -> None:
    """Write the public keys a gateway needs to verify session tickets itself: current.pem,
    next.pem and previous.pem (PEM public keys, as HAProxy's jwt_verify reads them),
    kids.map (key id -> slot) and issuer.lst (the tickets' iss). Run it again after every
    `broker keys rotate` and reload the gateway."""
    ctx = open_context(settings)
    ring = run_tx(ctx, lambda s: _ring_dict(ctx.keyring.state(s, ctx.now())))
    files = export_files(ring, settings.server.broker_id)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            _write(out / name, data)
    except OSError as exc:
        fail(f"--out {out}: {exc.strerror or exc}")
    _emit(ring, as_json, {"folder": str(out), "files": sorted(files)})
    if not as_json:
        click.echo(f"wrote {', '.join(sorted(files))} to {out}; reload the gateway to load them")
