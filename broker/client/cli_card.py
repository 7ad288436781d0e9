"""`broker-client card …`: the smart card in the reader (info, change-pin, unblock-pin)."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Sequence
from typing import Any

import click

from broker.client.cli_util import fail, warn


@click.group()
def card() -> None:
    """The smart card in the reader."""


def card_info_dict(reader_name: str | None, sc: Any) -> dict[str, Any]:
    """What ``card info`` shows, as plain values (no PIN, nothing secret)."""
    chuid = sc.read_chuid()
    certs = sc.certificates()
    return {"reader": reader_name, "atr": sc.atr.hex(), "kind": sc.kind,
            "fasc_n": chuid.fasc_n.hex() if chuid and chuid.fasc_n else None,
            "card_uuid": str(uuid.UUID(bytes=chuid.guid))
            if chuid and chuid.guid and len(chuid.guid) == 16 else None,
            "pin_tries_left": sc.pin_attempts_remaining(),
            "certificates": [{"slot": c.slot_id, "label": c.label,
                              "subject": c.certificate.subject.rfc4514_string(),
                              "issuer": c.certificate.issuer.rfc4514_string(),
                              "not_after": c.certificate.not_valid_after_utc.isoformat(),
                              "algorithm": sc.default_algorithm(c.certificate)}
                             for c in certs]}


@card.command("info")
@click.option("--reader", help="Use this PC/SC reader.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--strict-card-types", is_flag=True,
              help="PIV and CAC only: refuse other cards instead of reading them through their "
                   "PKCS#11 module.")
def card_info(reader: str | None, as_json: bool, strict_card_types: bool) -> None:
    """Reader, ATR, card kind (piv, cac, or pkcs11 for other cards), CHUID and certificates,
    PIN tries left."""
    from broker.client import transport
    from broker.client.any_card import open_any_card

    conn = transport.connect(reader)
    sc = None
    try:
        sc = open_any_card(conn, strict=strict_card_types, warn=warn)
        info = card_info_dict(conn.reader, sc)
    finally:
        (sc.connection if sc is not None else conn).disconnect()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key in ("reader", "atr", "kind", "fasc_n", "card_uuid", "pin_tries_left"):
        click.echo(f"{key}: {info[key] if info[key] is not None else '-'}")
    for c in info["certificates"]:
        click.echo(f"[{c['slot']}] {c['label']}: {c['subject']} (issuer {c['issuer']}, "
                   f"until {c['not_after']})")


def _secrets(from_stdin: bool, prompts: Sequence[str]) -> list[str]:
    """The PIN/PUK values: one line each on stdin, or asked without echo (the new PIN twice)."""
    if from_stdin:
        lines = [ln.strip() for ln in sys.stdin.read().splitlines() if ln.strip()]
        if len(lines) < len(prompts):
            fail(f"expected {len(prompts)} lines on standard input")
        return lines[:len(prompts)]
    values = [str(click.prompt(p, hide_input=True, err=True)) for p in prompts[:-1]]
    values.append(str(click.prompt(prompts[-1], hide_input=True, confirmation_prompt=True,
                                   err=True)))
    return values


def _with_card(reader: str | None, action: Any) -> None:
    from broker.client import transport
    from broker.client.any_card import open_any_card

    conn = transport.connect(reader)
    sc = None
    try:
        sc = open_any_card(conn, warn=warn)
        action(sc)
    finally:
        (sc.connection if sc is not None else conn).disconnect()


@card.command("change-pin")
@click.option("--reader", help="Use this PC/SC reader.")
@click.option("--stdin", "from_stdin", is_flag=True,
              help="Read the current and the new PIN from standard input, one per line.")
def card_change_pin(reader: str | None, from_stdin: bool) -> None:
    """Change the card's PIN (PIV or CAC); a wrong current PIN says how many tries are left."""
    old, new = _secrets(from_stdin, ["Current PIN", "New PIN"])

    def change(sc: Any) -> None:
        sc.change_pin(old, new)
        click.echo(f"PIN changed on the {sc.kind.upper()} card")

    _with_card(reader, change)


@card.command("unblock-pin")
@click.option("--reader", help="Use this PC/SC reader.")
@click.option("--stdin", "from_stdin", is_flag=True,
              help="Read the PUK and the new PIN from standard input, one per line.")
def card_unblock_pin(reader: str | None, from_stdin: bool) -> None:
    """Unblock the PIN with the PUK and set a new PIN (PIV or CAC); a wrong PUK says how many
    tries are left before the PUK blocks too."""
    puk, new = _secrets(from_stdin, ["PUK", "New PIN"])

    def unblock(sc: Any) -> None:
        sc.unblock_pin(puk, new)
        click.echo(f"PIN unblocked and set on the {sc.kind.upper()} card "
                   f"({sc.pin_attempts_remaining()} tries)")

    _with_card(reader, unblock)
