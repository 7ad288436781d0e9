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
user = [
  { username = "alice", upn = "alice@corp.example", email = "alice@corp.example" },
  { username = "dave", password = "correct horse battery staple", disabled = true },
]
workspace = [
  { id = "ws-alice", user = "alice", protocol = "WSP", os = "linux" },
 { id = "ws-dave", user = "dave", bundle = "performance", protocol = "PCoIP", state = "AVAILABLE" },
]

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
    # registration codes and password hashes inside: the owner's only
    assert out.stat().st_mode & 0o777 == 0o600
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
    assert 'os = "linux"' in exported, "a stated operating system is exported"
    assert exported.count("os = ") == 1, "one not stated (ws-dave) is left out: TOML has no null"
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
                  "alice", "--protocol", "WSP", "--os", "windows")
    assert ws["state"] == "STOPPED" and ws["os"] == "windows"
    assert run_json(cli, "workspaces", "update", "ws-alice", "--os", "linux")["os"] == "linux"
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


# --------------------------------------------------------------------------- issue 16 / 18 / 19

EAST_PRE_SESSION = """
[[directory]]
id = "east"
name = "Corp East"
region = "us-east-1"
smart_card = { pre_session = true }
registration_codes = 0
"""


def test_the_cli_refuses_an_id_the_api_refuses_and_shows_the_pattern(cli: BrokerProcess) -> None:
    # The smoke test of the real `broker admin` process (elsewhere it runs in-process).
    proc = cli.run_cli("admin", "directories", "create", "bad id!", "--name", "X", "--region",
                       "us-east-1", check=False, spawn=True)
    assert proc.returncode != 0
    assert "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$" in proc.stderr, proc.stderr
    cli.run_cli("admin", "directories", "create", "corp", "--name", "C", "--region", "us-east-1",
                "--password-login", spawn=True)
    cli.run_cli("admin", "users", "create", "corp", "alice")
    proc = cli.run_cli("admin", "workspaces", "create", "ws 1", "--directory", "corp", "--user",
                       "alice", "--protocol", "WSP", check=False)
    assert proc.returncode != 0 and "{0,63}$" in proc.stderr, proc.stderr
    assert run_json(cli, "directories", "list")["items"][0]["id"] == "corp"
    assert run_json(cli, "workspaces", "list")["items"] == []


def test_names_match_the_api_and_the_old_ones_are_aliases(cli: BrokerProcess) -> None:
    cli.run_cli("admin", "directories", "create", "corp", "--name", "C", "--region",
                "us-gov-west-1")
    issued = run_json(cli, "registration-codes", "issue", "corp")["items"]
    assert [c["code"] for c in run_json(cli, "codes", "list")["items"]] == [issued[0]["code"]]
    assert run_json(cli, "registration-codes", "list", "--directory", "corp")["items"] == \
        run_json(cli, "codes", "list", "--directory", "corp")["items"]
    new = run_json(cli, "audit-events", "list", "--kind", "registration_code.*")["items"]
    old = run_json(cli, "audit", "list", "--kind", "registration_code.*")["items"]
    assert new == old and [e["kind"] for e in new] == ["registration_code.issue"]


def test_the_directory_is_selected_the_same_way_everywhere(cli: BrokerProcess) -> None:
    cli.run_cli("admin", "directories", "create", "corp", "--name", "C", "--region",
                "us-gov-west-1", "--password-login")
    run_json(cli, "users", "create", "--directory", "corp", "alice")
    run_json(cli, "users", "create", "corp", "bob")
    by_option = run_json(cli, "users", "list", "--directory", "corp")["items"]
    by_argument = run_json(cli, "users", "list", "corp")["items"]
    assert [u["username"] for u in by_option] == [u["username"] for u in by_argument] == [
        "alice", "bob"]
    assert run_json(cli, "registration-codes", "issue", "--directory", "corp", "--count",
                    "2")["items"]
    proc = cli.run_cli("admin", "users", "list", check=False)
    assert proc.returncode == 2 and "directory" in proc.stderr


def test_choices_are_case_insensitive_and_output_is_readable(cli: BrokerProcess) -> None:
    out = cli.run_cli("admin", "directories", "create", "corp", "--name", "Corp", "--region",
                      "us-gov-west-1", "--removal-action", "DISCONNECT", "--fail-mode", "Hard",
                      "--certmap", "UPN,email", "--password-login").stdout
    assert out.startswith("directory corp created\n"), out
    assert "smart_card.removal_action: disconnect" in out and "certmap: upn,email" in out
    assert "{" not in out and "None" not in out, out
    cli.run_cli("admin", "users", "create", "corp", "alice")
    ws = run_json(cli, "workspaces", "create", "ws-a", "--directory", "corp", "--user", "alice",
                  "--protocol", "wsp", "--running-mode", "always_on")
    assert (ws["protocol"], ws["running_mode"]) == ("WSP", "ALWAYS_ON")
    table = cli.run_cli("admin", "users", "list", "corp").stdout
    assert "None" not in table and "  -" in table, table  # one missing marker: -
    assert "PCoIP" in run_json(cli, "workspaces", "update", "ws-a", "--protocol",
                               "pcoip")["protocol"]


def test_required_eku_is_settable_on_every_path(cli: BrokerProcess, tmp_path: Path) -> None:
    d = run_json(cli, "directories", "create", "corp", "--name", "C", "--region",
                 "us-gov-west-1", "--required-eku", "any")
    assert d["required_eku"] == "any"
    assert run_json(cli, "directories", "update", "corp", "--required-eku",
                    "client-auth")["required_eku"] == "client-auth"
    (tmp_path / "d.toml").write_text(EAST_PRE_SESSION.replace(
        "registration_codes = 0", 'registration_codes = 0\nrequired_eku = "any"'))
    assert apply(cli, tmp_path / "d.toml")["directories"][0]["changes"] == 1
    cli.run_cli("admin", "export", "east", "-o", str(tmp_path / "out.toml"))
    assert 'required_eku = "any"' in (tmp_path / "out.toml").read_text()


def test_settings_that_cannot_take_effect_are_warned_with_the_policy_reason(
        cli: BrokerProcess, tmp_path: Path) -> None:
    proc = cli.run_cli("admin", "directories", "create", "east", "--name", "E", "--region",
                       "us-east-1", "--pre-session")
    assert "region_pre_session_unavailable" in proc.stderr, proc.stderr
    assert "no_login_method" in proc.stderr
    d = run_json(cli, "directories", "get", "east")
    assert [w["code"] for w in d["warnings"]] == ["region_pre_session_unavailable",
                                                  "no_login_method"]
    d = run_json(cli, "directories", "update", "east", "--no-pre-session", "--password-login")
    assert d["warnings"] == []
    gov = run_json(cli, "directories", "create", "gov", "--name", "G", "--region",
                   "us-gov-west-1", "--pre-session")
    assert gov["warnings"] == []  # a positive control: the same setting where it applies
    (tmp_path / "d.toml").write_text(EAST_PRE_SESSION)
    proc = cli.run_cli("admin", "apply", str(tmp_path / "d.toml"))
    assert "warning: east: smart_card.pre_session" in proc.stderr, proc.stderr
    result = apply(cli, tmp_path / "d.toml")
    assert result["directories"][0]["warnings"][0]["code"] == "region_pre_session_unavailable"


def test_apply_says_what_changed_and_dry_run_changes_nothing(cli: BrokerProcess, pki: Pki,
                                                             tmp_path: Path) -> None:
    base = tmp_path / "ops"
    write_pki(base, pki)
    (base / "directories.toml").write_text(FILE)
    out = cli.run_cli("admin", "apply", str(base / "directories.toml")).stdout
    assert "directory corp created" in out and "user alice created" in out, out
    assert "workspace ws-dave created" in out and "anchor " in out
    changed = FILE.replace('name = "Corp GovCloud"', 'name = "Corp 2"').replace(
        'fail_mode = "hard"', 'fail_mode = "soft"')
    (base / "changed.toml").write_text(changed)
    before = _state(cli)
    proc = cli.run_cli("admin", "apply", str(base / "changed.toml"), "--dry-run")
    assert "directory corp.name: Corp GovCloud → Corp 2" in proc.stdout, proc.stdout
    assert "directory corp.revocation.fail_mode: hard → soft" in proc.stdout
    assert "dry run: nothing was changed" in proc.stdout
    assert _state(cli) == before
    dry = json.loads(cli.run_cli("admin", "apply", str(base / "changed.toml"), "--dry-run",
                                 "--json").stdout)
    assert dry["dry_run"] is True and changes(dry) == 2
    assert _state(cli) == before
    assert changes(apply(cli, base / "changed.toml")) == 2
    assert run_json(cli, "directories", "get", "corp")["name"] == "Corp 2"


def test_apply_prune_removes_what_the_file_no_longer_lists(cli: BrokerProcess, pki: Pki,
                                                           tmp_path: Path) -> None:
    base = tmp_path / "ops"
    write_pki(base, pki)
    (base / "directories.toml").write_text(FILE)
    apply(cli, base / "directories.toml")
    smaller = FILE.replace('intermediates = ["pki/issuing.pem"]\n', "").replace(
        '  { username = "dave", password = "correct horse battery staple", disabled = true },\n',
        "").replace(' { id = "ws-dave", user = "dave", bundle = "performance", protocol = '
                    '"PCoIP", state = "AVAILABLE" },\n', "")
    smaller = smaller.split("[[directory]]\nid = \"east\"")[0] + EAST_PRE_SESSION.replace(
        "registration_codes = 0", "registration_codes = 1")
    (base / "smaller.toml").write_text(smaller)
    # Without --prune nothing is removed; refused confirmation removes nothing either.
    apply(cli, base / "smaller.toml")
    assert len(run_json(cli, "users", "list", "corp")["items"]) == 2
    proc = cli.run_cli("admin", "apply", str(base / "smaller.toml"), "--prune", input="n\n",
                       check=False)
    assert proc.returncode != 0 and "user dave removed" in proc.stderr, proc.stderr
    assert len(run_json(cli, "users", "list", "corp")["items"]) == 2
    out = cli.run_cli("admin", "apply", str(base / "smaller.toml"), "--prune", "--yes").stdout
    assert "user dave removed" in out and "intermediate " in out, out
    assert [u["username"] for u in run_json(cli, "users", "list", "corp")["items"]] == ["alice"]
    assert [w["id"] for w in run_json(cli, "workspaces", "list", "--directory",
                                      "corp")["items"]] == ["ws-alice"]
    assert [t["kind"] for t in run_json(cli, "trust", "list", "corp")["items"]] == ["anchor"]
    assert changes(apply(cli, base / "smaller.toml")) == 0


def test_every_admin_option_has_help_text() -> None:
    import click

    from broker.admin_cli import admin

    missing = []

    def walk(cmd: click.Command, path: str) -> None:
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, f"{path} {name}")
            return
        missing.extend(f"{path} {p.opts[0]}" for p in cmd.params
                       if isinstance(p, click.Option) and not p.help)
        assert cmd.help, path

    walk(admin, "admin")
    assert missing == []


def test_dry_run_shows_no_code_that_apply_would_not_issue(cli: BrokerProcess, pki: Pki,
                                                          tmp_path: Path) -> None:
    base = tmp_path / "ops"
    write_pki(base, pki)
    (base / "directories.toml").write_text(FILE)
    dry = cli.run_cli("admin", "apply", str(base / "directories.toml"), "--dry-run")
    assert "registration codes: 2 new codes (issued on apply)" in dry.stdout, dry.stdout
    assert "registration codes: 1 new code (issued on apply)" in dry.stdout
    assert "+" not in dry.stdout, "a dry run printed a code that will never exist"
    as_json = json.loads(cli.run_cli("admin", "apply", str(base / "directories.toml"),
                                     "--dry-run", "--json").stdout)
    assert [d["registration_codes"] for d in as_json["directories"]] == [[], []]
    assert [d["new_registration_codes"] for d in as_json["directories"]] == [2, 1]
    real = apply(cli, base / "directories.toml")
    assert [len(d["registration_codes"]) for d in real["directories"]] == [2, 1]
    assert [d["new_registration_codes"] for d in real["directories"]] == [2, 1]
    # once issued, a dry run shows the real codes and nothing new
    again = json.loads(cli.run_cli("admin", "apply", str(base / "directories.toml"),
                                   "--dry-run", "--json").stdout)
    assert [d["registration_codes"] for d in again["directories"]] == \
        [d["registration_codes"] for d in real["directories"]]


def test_export_warns_that_codes_are_live_and_no_codes_leaves_them_out(
        cli: BrokerProcess, pki: Pki, tmp_path: Path) -> None:
    base = tmp_path / "ops"
    write_pki(base, pki)
    (base / "directories.toml").write_text(FILE)
    codes = [c for d in apply(cli, base / "directories.toml")["directories"]
             for c in d["registration_codes"]]
    out = cli.run_cli("admin", "export", "corp", "east", "-o", str(tmp_path / "a.toml"))
    assert "3 live registration codes" in out.stderr and "--no-codes" in out.stderr
    assert all(c in (tmp_path / "a.toml").read_text() for c in codes)
    out = cli.run_cli("admin", "export", "corp", "east", "--no-codes", "-o",
                      str(tmp_path / "b.toml"))
    text = (tmp_path / "b.toml").read_text()
    assert not any(c in text for c in codes) and "live" not in out.stderr
    # the counts apply again without change: the directories keep their own codes
    again = apply(cli, tmp_path / "b.toml")
    assert changes(again) == 0, again
    assert [c for d in again["directories"] for c in d["registration_codes"]] == codes


def test_directory_first_works_for_workspaces_and_codes_as_for_users(
        cli: BrokerProcess, pki: Pki, tmp_path: Path) -> None:
    base = tmp_path / "ops"
    write_pki(base, pki)
    (base / "directories.toml").write_text(FILE)
    apply(cli, base / "directories.toml")
    made = run_json(cli, "workspaces", "create", "corp", "ws-pos", "--user", "alice",
                    "--protocol", "WSP")
    assert made["directory"] == "corp" and made["id"] == "ws-pos"
    codes = run_json(cli, "codes", "list", "corp")["items"]
    assert len(codes) == 2 and {c["directory"] for c in codes} == {"corp"}
    listed = run_json(cli, "workspaces", "list", "corp")["items"]
    assert "ws-pos" in {w["id"] for w in listed} and {w["directory"] for w in listed} == {"corp"}
    # the option form still works; both at once, or neither, is a usage error
    assert run_json(cli, "workspaces", "create", "ws-opt", "--directory", "corp", "--user",
                    "alice", "--protocol", "WSP")["directory"] == "corp"
    both = cli.run_cli("admin", "workspaces", "create", "corp", "ws-2", "--directory", "corp",
                       "--user", "alice", "--protocol", "WSP", check=False)
    neither = cli.run_cli("admin", "workspaces", "create", "ws-3", "--user", "alice",
                          "--protocol", "WSP", check=False)
    assert both.returncode == neither.returncode == 2
    assert "name the directory" in both.stderr and "name the directory" in neither.stderr


def test_lists_show_when_next_update_client_and_user(cli: BrokerProcess, pki: Pki,
                                                     tmp_path: Path) -> None:
    from broker.admin.sessions import SESSIONS

    base = tmp_path / "ops"
    write_pki(base, pki)
    (base / "directories.toml").write_text(FILE)
    apply(cli, base / "directories.toml")
    audit = cli.run_cli("admin", "audit", "list", "--limit", "2").stdout.splitlines()
    assert audit[0].split()[:2] == ["ID", "AT"] and "CLIENT_ADDRESS" in audit[0], audit
    crls = cli.run_cli("admin", "crls", "list", "corp").stdout.splitlines()
    assert "NEXT_UPDATE" in crls[0], crls
    assert "user" in SESSIONS.list_columns  # sessions list their user by name
