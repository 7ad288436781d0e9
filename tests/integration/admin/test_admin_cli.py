"""`broker admin …` on SQLite and PostgreSQL: apply → export → apply round-trips with no change,
a failing apply changes nothing, and the resource commands mirror the admin API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests.integration.admin.conftest import Pki
from tests.support.server import BrokerProcess

FILE = """
[[directory]]
id = "corp"
name = "Corp GovCloud"
region = "us-gov-west-1"
password_login = true
smart_card = { pre_session = true, in_session = true, removal_action = "disconnect" }
revocation = { crl = true, ocsp = false, fail_mode = "hard" }
trust_anchors = ["pki/root.pem"]
intermediates = ["pki/issuing.pem"]
crls = ["pki/issuing.crl.pem"]
certmap = ["upn", "email", "fingerprint"]
registration_codes = 2

[[directory.user]]
username = "alice"
upn = "alice@corp.example"
email = "alice@corp.example"

[[directory.user]]
username = "dave"
password = "correct horse battery staple"
disabled = true

[[directory.workspace]]
id = "ws-alice"
user = "alice"
protocol = "WSP"
running_mode = "AUTO_STOP"
state = "STOPPED"

[[directory.workspace]]
id = "ws-dave"
user = "dave"
bundle = "performance"
protocol = "PCoIP"
running_mode = "ALWAYS_ON"
state = "AVAILABLE"

[[directory]]
id = "east"
name = "Corp East"
region = "us-east-1"
smart_card = { in_session = true }
trust_anchors = ["pki/root.pem"]
registration_codes = 1
"""


@pytest.fixture
def cli(broker_factory: Any, migrated_url: str) -> BrokerProcess:
    """A configured broker on the parametrised database; the CLI needs no running server."""
    return broker_factory(migrated_url, start=False)


def write_pki(base: Path, pki: Pki) -> None:
    (base / "pki").mkdir(parents=True, exist_ok=True)
    (base / "pki" / "root.pem").write_bytes(pki.root.cert_pem())
    (base / "pki" / "issuing.pem").write_bytes(pki.issuing.cert_pem())
    (base / "pki" / "issuing.crl.pem").write_text(pki.crl_pem())


def apply(cli: BrokerProcess, path: Path) -> dict[str, Any]:
    return json.loads(cli.run_cli("admin", "apply", str(path), "--json").stdout)


def export(cli: BrokerProcess, out: Path) -> str:
    cli.run_cli("admin", "export", "corp", "east", "-o", str(out))
    return "\n".join(line for line in out.read_text().splitlines()
                     if not line.startswith("# Exported"))


def changes(result: dict[str, Any]) -> int:
    return sum(d.get("changes", 0) for d in result["directories"])


def test_apply_export_apply_round_trips_with_no_change(cli: BrokerProcess, pki: Pki,
                                                       tmp_path: Path) -> None:
    base = tmp_path / "ops"
    write_pki(base, pki)
    (base / "directories.toml").write_text(FILE)
    first = apply(cli, base / "directories.toml")
    assert changes(first) > 0
    assert len(first["directories"][0]["registration_codes"]) == 2
    assert changes(apply(cli, base / "directories.toml")) == 0

    exported = export(cli, tmp_path / "out" / "corp.toml")
    again = apply(cli, tmp_path / "out" / "corp.toml")
    assert changes(again) == 0, again
    assert again["directories"][0]["registration_codes"] == \
        first["directories"][0]["registration_codes"]
    assert export(cli, tmp_path / "out2" / "corp.toml").replace("out2", "out") == exported
    out = cli.run_cli("admin", "apply", str(base / "directories.toml"))
    assert "nothing to change" in out.stdout


def _state(cli: BrokerProcess) -> Any:
    return [json.loads(cli.run_cli(*args, "--json").stdout)["items"] for args in (
        ("admin", "directories", "list"), ("admin", "workspaces", "list"),
        ("admin", "codes", "list"), ("admin", "users", "list", "corp"),
        ("admin", "trust", "list", "corp"))]


def test_a_failing_apply_changes_nothing(cli: BrokerProcess, pki: Pki, tmp_path: Path) -> None:
    base = tmp_path / "ops"
    write_pki(base, pki)
    (base / "directories.toml").write_text(FILE)
    apply(cli, base / "directories.toml")
    before = _state(cli)
    # east changes first, then thief claims corp's WorkSpace: found only against the database.
    bad = """
[[directory]]
id = "east"
name = "Renamed East"
region = "us-east-1"
registration_codes = 3

[[directory]]
id = "thief"
name = "Thief"
region = "us-east-1"

[[directory.user]]
username = "mallory"

[[directory.workspace]]
id = "ws-alice"
user = "mallory"
protocol = "WSP"
"""
    (base / "bad.toml").write_text(bad)
    proc = cli.run_cli("admin", "apply", str(base / "bad.toml"), check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "ws-alice" in proc.stderr and "bad.toml:" in proc.stderr
    assert _state(cli) == before

    (base / "bad2.toml").write_text(FILE.replace("us-east-1", "mars-north-1"))
    proc = cli.run_cli("admin", "apply", str(base / "bad2.toml"), check=False)
    assert proc.returncode == 1 and "region" in proc.stderr
    assert _state(cli) == before


def run_json(cli: BrokerProcess, *args: str, input: str | None = None) -> Any:
    return json.loads(cli.run_cli("admin", *args, "--json", input=input).stdout)


def test_cli_mirrors_the_admin_api(cli: BrokerProcess, pki: Pki, tmp_path: Path) -> None:
    d = run_json(cli, "directories", "create", "corp", "--name", "Corp", "--region",
                 "us-gov-west-1", "--pre-session", "--password-login", "--certmap", "upn,email")
    assert d["smart_card"]["pre_session"] is True and d["password_login"] is True
    d = run_json(cli, "directories", "update", "corp", "--removal-action", "disconnect",
                 "--fail-mode", "hard")
    assert (d["smart_card"]["removal_action"], d["revocation"]["fail_mode"]) == (
        "disconnect", "hard")
    proc = cli.run_cli("admin", "directories", "create", "corp", "--name", "X", "--region",
                       "us-gov-west-1", check=False)
    assert proc.returncode == 1 and "already exists" in proc.stderr

    write_pki(tmp_path, pki)
    (tmp_path / "leaf.pem").write_bytes(pki.leaf.cert_pem())
    added = run_json(cli, "trust", "add", "corp", str(tmp_path / "pki" / "root.pem"))
    assert added["items"][0]["kind"] == "anchor"
    proc = cli.run_cli("admin", "trust", "add", "corp", str(tmp_path / "leaf.pem"), check=False)
    assert proc.returncode == 1 and "not a CA" in proc.stderr
    (tmp_path / "crl.der").write_bytes(pki.crl.public_bytes(serialization.Encoding.DER))
    crl = run_json(cli, "crls", "add", "corp", str(tmp_path / "crl.der"))
    assert crl["next_update"]
    assert [c["fingerprint"] for c in run_json(cli, "crls", "list", "corp")["items"]] == [
        crl["fingerprint"]]

    user = run_json(cli, "users", "create", "corp", "dave", "--password-stdin",
                    input="hunter2 hunter2\n")
    assert user["has_password"] is True
    run_json(cli, "users", "create", "corp", "alice", "--upn", "alice@corp.example")
    assert run_json(cli, "users", "update", "corp", "alice", "--disabled")["disabled"] is True

    ws = run_json(cli, "workspaces", "create", "ws-alice", "--directory", "corp", "--user",
                  "alice", "--protocol", "WSP")
    assert ws["state"] == "STOPPED"
    assert run_json(cli, "workspaces", "start", "ws-alice")["state"] == "STARTING"
    assert run_json(cli, "workspaces", "update", "ws-alice", "--protocol",
                    "PCoIP")["protocol"] == "PCoIP"
    codes = run_json(cli, "codes", "issue", "corp", "--count", "2")["items"]
    new = run_json(cli, "codes", "rotate", codes[0]["code"])
    assert run_json(cli, "codes", "revoke", new["code"])["state"] == "revoked"
    states = sorted(c["state"] for c in run_json(cli, "codes", "list",
                                                 "--directory", "corp")["items"])
    assert states == ["active", "revoked", "rotated"]
    assert run_json(cli, "sessions", "list", "--state", "live")["items"] == []
    proc = cli.run_cli("admin", "sessions", "terminate", "nope", check=False)
    assert proc.returncode == 1

    events = run_json(cli, "audit", "list", "--directory", "corp", "--limit", "500")["items"]
    assert events and all(e["actor"].startswith("cli") for e in events)
    kinds = {e["kind"] for e in events}
    assert {"directory.create", "directory.update", "trust.add", "crl.add", "user.create",
            "user.update", "workspace.create", "workspace.start", "workspace.update",
            "registration_code.issue", "registration_code.rotate",
            "registration_code.revoke"} <= kinds
    assert {e["kind"] for e in run_json(cli, "audit", "list", "--kind", "user.*")["items"]} == {
        "user.create", "user.update"}
    table = cli.run_cli("admin", "workspaces", "list").stdout
    assert "ws-alice" in table and "PROTOCOL" in table
    assert cli.run_cli("admin", "directories", "delete", "corp", "--yes").returncode == 0
    assert run_json(cli, "directories", "list")["items"] == []


def test_export_of_a_directory_with_password_login_turned_off_applies_again(
        cli: BrokerProcess, tmp_path: Path) -> None:
    cli.run_cli("admin", "directories", "create", "corp", "--name", "Corp", "--region",
                "us-gov-west-1", "--password-login")
    cli.run_cli("admin", "users", "create", "corp", "dave", "--password-stdin", input="pw\n")
    cli.run_cli("admin", "directories", "update", "corp", "--no-password-login")
    cli.run_cli("admin", "export", "corp", "-o", str(tmp_path / "corp.toml"))
    assert changes(apply(cli, tmp_path / "corp.toml")) == 0
