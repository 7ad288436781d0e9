"""`broker keys …`: the export a gateway reads (files, PEM form, kid map) and the CLI help.
The export runs on a SQLite database of its own; tests/integration/test_gateway.py runs it in
front of the real HAProxy."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from broker.cli import main
from broker.keys_cli import export_files


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A state folder and SQLite database of their own, migrated."""
    for name in [k for k in os.environ if k.startswith("BROKER_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no ./config/broker.toml: built-in defaults
    values = {"BROKER_SERVER_STATE_DIR": str(tmp_path / "state"),
              "BROKER_DATABASE_URL": f"sqlite:///{tmp_path / 'state' / 'broker.db'}"}
    assert run(values, "migrate").exit_code == 0
    return values


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, prog_name="broker")


def public_numbers(pem: bytes) -> tuple[int, int]:
    key = serialization.load_pem_public_key(pem)
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    nums = key.public_numbers()
    return nums.x, nums.y


def test_export_files_name_each_slot_and_fill_an_empty_one() -> None:
    current, nxt = ECKey.generate_key("P-256"), ECKey.generate_key("P-256")
    ring = {"current": {"kid": "k-cur", "public_pem": current.as_pem(private=False).decode()},
            "next": {"kid": "k-next", "public_pem": nxt.as_pem(private=False).decode()},
            "previous": None}
    files = export_files(ring, "broker-7")
    assert sorted(files) == ["current.pem", "issuer.lst", "kids.map", "next.pem",
                             "previous.pem"]
    assert files["current.pem"].startswith(b"-----BEGIN PUBLIC KEY-----")
    assert public_numbers(files["current.pem"]) == public_numbers(
        current.as_pem(private=False))
    lines = [line for line in files["kids.map"].decode().splitlines()
             if not line.startswith("#")]
    assert lines == ["k-cur current", "k-next next"], "an empty slot is named by no kid"
    # the empty slot still holds a readable public key (HAProxy names the file), of no key here
    filler = public_numbers(files["previous.pem"])
    assert filler not in (public_numbers(files["current.pem"]),
                          public_numbers(files["next.pem"]))
    assert files["issuer.lst"] == b"broker-7\n"


def test_export_gateway_writes_the_published_keys(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "gw" / "ticket-keys"
    r = run(env, "keys", "export-gateway", "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["previous"] is None and doc["current"]["kid"] != doc["next"]["kid"]
    assert doc["next"]["signs_from"] > doc["current"]["signs_from"]
    for name in doc["files"]:
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
        assert b"PRIVATE" not in (out / name).read_bytes()
    kids = dict(line.split() for line in (out / "kids.map").read_text().splitlines()
                if not line.startswith("#"))
    assert kids == {doc["current"]["kid"]: "current", doc["next"]["kid"]: "next"}
    assert (out / "issuer.lst").read_text() == "smartcard-broker\n"

    rotated = run(env, "keys", "rotate", "--json")
    assert rotated.exit_code == 0, rotated.output
    after = json.loads(rotated.stdout)
    assert after["current"]["kid"] == doc["next"]["kid"]
    assert after["previous"]["kid"] == doc["current"]["kid"]
    # text output of a second export: one line per slot and the folder
    again = run(env, "keys", "export-gateway", "--out", str(out))
    assert again.exit_code == 0, again.output
    text = again.stdout.splitlines()
    assert text[0].startswith(f"current   {after['current']['kid']}  signs since ")
    assert text[1].startswith(f"next      {after['next']['kid']}  signs from ")
    assert text[2].startswith(f"previous  {doc['current']['kid']}  retired ")
    assert text[3].startswith("wrote current.pem, issuer.lst, kids.map, next.pem, previous.pem")
    assert len(list(out.iterdir())) == 5, "no temporary file is left behind"
    listed = json.loads(run(env, "keys", "list", "--json").stdout)
    assert {s: (k or {}).get("kid") for s, k in listed.items()} == \
        {s: (k or {}).get("kid") for s, k in after.items() if s != "was_published"}


def test_export_gateway_refuses_an_unwritable_folder(env: dict[str, str],
                                                     tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = run(env, "keys", "export-gateway", "--out", str(blocker / "keys"))
    assert r.exit_code == 1
    assert r.stderr.startswith("error: --out ") and "Traceback" not in r.output


def test_export_gateway_needs_a_migrated_database(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = run({"BROKER_SERVER_STATE_DIR": str(tmp_path)}, "keys", "export-gateway", "--out",
            str(tmp_path / "out"), "--database-url", f"sqlite:///{tmp_path / 'none.db'}")
    assert r.exit_code == 1 and "broker migrate" in r.stderr
    assert not (tmp_path / "out").exists()


def test_help_lists_the_keys_commands() -> None:
    top = CliRunner().invoke(main, ["--help"], prog_name="broker")
    assert top.exit_code == 0 and "keys" in top.output
    group = CliRunner().invoke(main, ["keys", "--help"], prog_name="broker")
    assert group.exit_code == 0
    for name in ("export-gateway", "list", "rotate"):
        assert name in group.output
    export = CliRunner().invoke(main, ["keys", "export-gateway", "--help"], prog_name="broker")
    assert export.exit_code == 0
    for word in ("--out", "--config", "--database-url", "--json", "current.pem", "next.pem",
                 "previous.pem", "kids.map", "jwt_verify"):
        assert word in export.output, word
    missing = CliRunner().invoke(main, ["keys", "export-gateway"], prog_name="broker")
    assert missing.exit_code == 2 and "--out" in missing.output
