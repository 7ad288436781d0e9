"""An operator's view of `broker`: config found from any folder, start-up checks, commands that
only read create nothing, confirmation before destroying data, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import REPO, BrokerProcess


def broker_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    clean["PYTHONPATH"] = str(REPO)  # the checkout's package, run from elsewhere
    clean.update(env or {})
    return subprocess.run([sys.executable, "-m", "broker.cli", *args], cwd=cwd, env=clean,
                          capture_output=True, text=True, input=input, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*"))


@pytest.fixture
def elsewhere(tmp_path: Path) -> tuple[Path, Path]:
    """(config file kept in its own folder, an unrelated empty working folder)."""
    etc = tmp_path / "etc" / "x"
    etc.mkdir(parents=True)
    config = etc / "broker.toml"
    config.write_text("# an operator's config: nothing but defaults\n")
    srv = tmp_path / "srv"
    srv.mkdir()
    return config, srv


def test_config_elsewhere_finds_the_shipped_catalogue_and_keeps_state_beside_it(
        elsewhere: tuple[Path, Path], tmp_path: Path) -> None:
    config, srv = elsewhere
    assert broker_cli("migrate", "--config", str(config), cwd=srv).returncode == 0
    assert (config.parent / "var" / "broker.db").is_file()
    directory = tmp_path / "dirs.toml"
    directory.write_text('[[directory]]\nid = "corp"\nname = "Corp"\nregion = "us-east-1"\n')
    out = broker_cli("admin", "apply", str(directory), "--config", str(config), cwd=srv)
    assert out.returncode == 0, out.stderr
    assert files_under(srv) == [], "a command wrote into the working folder"


def test_broker_config_environment_variable_is_used(elsewhere: tuple[Path, Path]) -> None:
    config, srv = elsewhere
    out = broker_cli("migrate", cwd=srv, env={"BROKER_CONFIG": str(config)})
    assert out.returncode == 0, out.stderr
    assert (config.parent / "var" / "broker.db").is_file()


def test_read_only_command_creates_no_database(elsewhere: tuple[Path, Path]) -> None:
    config, srv = elsewhere
    out = broker_cli("admin", "token", "list", "--config", str(config), cwd=srv)
    assert_one_line_error(out, "does not exist", "broker migrate")
    assert files_under(config.parent) == [config]
    assert files_under(srv) == []


def test_missing_database_folder_is_an_error_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent" / "dir"
    out = broker_cli("migrate", "--database-url", f"sqlite:///{missing / 'x.db'}", cwd=tmp_path)
    assert_one_line_error(out, str(missing))
    assert not missing.parent.exists()


def test_downgrade_asks_before_dropping_the_schema(broker_factory, migrated_url: str) -> None:  # type: ignore[no-untyped-def]
    bp: BrokerProcess = broker_factory(migrated_url, start=False)
    from broker.store import migrate

    migrate.upgrade(migrated_url)
    refused = bp.run_cli("migrate", "--downgrade", "--revision", "base", input="n\n",
                         check=False)
    assert refused.returncode == 1 and "not confirmed" in refused.stderr
    assert "Traceback" not in refused.stderr
    no_tty = bp.run_cli("migrate", "--downgrade", "--revision", "base", input="", check=False)
    assert no_tty.returncode == 1
    from broker.store.db import Database

    db = Database(migrated_url)
    try:
        assert migrate.current_revision(db.engine) == migrate.head_revision()
        bp.run_cli("migrate", "--downgrade", "--revision", "base", "--yes")
        assert migrate.current_revision(db.engine) is None
    finally:
        db.dispose()


def test_serve_refuses_a_missing_catalogue_in_one_line(broker_factory, migrated_url: str) -> None:  # type: ignore[no-untyped-def]
    bp: BrokerProcess = broker_factory(
        migrated_url, '[regions]\ncatalogue = "nope.toml"\n', start=False)
    out = subprocess.run(bp.command("serve", "--dev", "--config", str(bp.config_path)),
                         capture_output=True, text=True, env=bp.full_env(), cwd=bp.base,
                         timeout=60)
    assert_one_line_error(out, "region catalogue not found")


def test_serve_refuses_a_schema_behind_head(broker_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    bp: BrokerProcess = broker_factory(url, start=False)
    (tmp_path / "empty.db").touch()
    out = subprocess.run(bp.command("serve", "--config", str(bp.config_path)),
                         capture_output=True, text=True, env=bp.full_env(), cwd=bp.base,
                         timeout=60)
    # --dev would migrate; without it, TLS is checked first: give it a certificate.
    assert out.returncode != 0
    from broker.web.server import dev_certificate

    tls = dev_certificate(bp.base / "tls")
    bp.config_path.write_text(bp.config_path.read_text().replace(
        "[server]\n", f'[server]\ntls_cert = "{tls.cert}"\ntls_key = "{tls.key}"\n'))
    out = subprocess.run(bp.command("serve", "--config", str(bp.config_path)),
                         capture_output=True, text=True, env=bp.full_env(), cwd=bp.base,
                         timeout=60)
    assert_one_line_error(out, "broker migrate")


def test_serve_refuses_an_unreachable_database(broker_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bp: BrokerProcess = broker_factory(
        "postgresql+psycopg://nobody@127.0.0.1:1/none", start=False)
    out = subprocess.run(bp.command("serve", "--dev", "--config", str(bp.config_path)),
                         capture_output=True, text=True, env=bp.full_env(), cwd=bp.base,
                         timeout=60)
    assert_one_line_error(out, "unreachable")


def test_readyz_says_why_when_the_schema_goes_away(broker) -> None:  # type: ignore[no-untyped-def]
    assert broker.client().get("/readyz").status == 200
    broker.run_cli("migrate", "--downgrade", "--revision", "base", "--yes")
    r = broker.client().get("/readyz")
    assert r.status == 503 and r.body["reason"] == "schema_not_at_head", r.body
    scraped = broker.admin().get("/metrics").body.decode()
    assert 'broker_ready{reason="schema_not_at_head"} 0.0' in scraped


def test_export_to_a_path_under_a_file_is_one_line(broker, world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = broker.run_cli("admin", "export", "corp", "-o", str(blocker / "corp.toml"),
                         check=False)
    assert_one_line_error(out, "cannot write")


def test_migrate_says_what_it_did_without_warnings(tmp_path: Path) -> None:
    from broker.store import migrate

    head = migrate.head_revision()
    url = f"sqlite:///{tmp_path / 'b.db'}"
    first = broker_cli("migrate", "--database-url", url, cwd=tmp_path)
    assert first.returncode == 0 and first.stdout.strip().endswith(f"migrated 0000 → {head}")
    # SQLAlchemy cannot reflect the certmap expression indexes: silenced where batch mode
    # reflects them, and the indexes are still there.
    assert first.stderr == "", first.stderr
    again = broker_cli("migrate", "--database-url", url, cwd=tmp_path)
    assert again.stdout.strip().endswith(f"already at {head}") and again.stderr == ""
    down = broker_cli("migrate", "--database-url", url, "--downgrade", "--revision", "0006",
                      "--yes", cwd=tmp_path)
    assert down.stdout.strip().endswith(f"migrated {head} → 0006"), down.stdout + down.stderr


def test_migrations_keep_the_certmap_expression_indexes(db_url: str) -> None:
    from sqlalchemy import create_engine, text

    from broker.store import migrate

    migrate.upgrade(db_url)
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                names = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'index' "
                                          "AND tbl_name = 'users'")).scalars().all()
            else:
                names = conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = "
                                          "'users' AND schemaname = current_schema()")
                                     ).scalars().all()
    finally:
        engine.dispose()
    assert {"ix_users_certmap_upn", "ix_users_certmap_email", "ix_users_certmap_subject",
            "ix_users_certmap_fingerprint"} <= set(names)


def test_serve_on_a_port_in_use_is_one_error_line_and_exit_2(broker_factory,
                                                             migrated_url: str) -> None:  # type: ignore[no-untyped-def]
    import socket

    bp: BrokerProcess = broker_factory(migrated_url, start=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", bp.port))
        taken.listen()
        out = subprocess.run(bp.command("serve", "--dev", "--config", str(bp.config_path)),
                             capture_output=True, text=True, env=bp.full_env(), cwd=bp.base,
                             timeout=60)
    assert_one_line_error(out, "server.listen", "address already in use")
    assert out.returncode == 2
    assert out.stdout == "", "no JSON log line instead of the error"


def test_config_init_writes_the_documented_config_once(tmp_path: Path) -> None:
    out = broker_cli("config", "init", cwd=tmp_path)
    written = tmp_path / "config" / "broker.toml"
    assert out.returncode == 0 and "config/broker.toml" in out.stdout, out.stderr
    text = written.read_text()
    assert text.startswith("# Written by `broker config init --for local`")
    assert "# PEM certificate chain and private key" in text  # the comments came along
    assert oct(written.stat().st_mode & 0o777) == "0o640"
    again = broker_cli("config", "init", cwd=tmp_path)
    assert_one_line_error(again, "exists", "--force")
    assert again.returncode == 2 and written.read_text() == text
    # what it wrote is what the broker then reads from ./config/broker.toml
    doctor = broker_cli("doctor", cwd=tmp_path)
    assert "config/broker.toml" in doctor.stdout.splitlines()[0]
