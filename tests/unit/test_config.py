"""Configuration: defaults, file, environment, flags, and one clear error per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import ConfigError, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config" / "broker.toml"
    p.parent.mkdir(exist_ok=True)
    p.write_text(text)
    return p


def test_shipped_config_matches_the_defaults_key_for_key() -> None:
    shipped = load_settings(REPO / "config" / "broker.toml", environ={})
    defaults = Settings()
    for section in ("server", "database", "login", "registration", "sessions", "workspaces",
                    "regions", "log"):
        assert getattr(shipped, section) == getattr(defaults, section), section


def test_env_overrides_file(tmp_path: Path) -> None:
    p = write(tmp_path, "[login]\nchallenge_ttl_s = 30\n")
    s = load_settings(p, environ={"BROKER_LOGIN_CHALLENGE_TTL_S": "5"})
    assert s.login.challenge_ttl_s == 5


def test_env_bool_and_float_are_converted(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, ""), environ={"BROKER_WORKSPACES_START_DELAY_S": "0.5"})
    assert s.workspaces.start_delay_s == 0.5


def test_relative_sqlite_path_resolves_against_the_config_files_folder(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, '[database]\nurl = "sqlite:///var/x.db"\n'), environ={})
    assert s.database_url == f"sqlite:///{tmp_path / 'config' / 'var' / 'x.db'}"


@pytest.mark.parametrize("text,key", [
    ("[server]\nlisten = 8443\n", "server.listen"),
    ("[login]\nchallenge_ttl_s = \"soon\"\n", "login.challenge_ttl_s"),
    ("[login]\nchallenge_ttl_s = 0\n", "login.challenge_ttl_s"),
    ("[login]\nchalenge_ttl_s = 5\n", "login.chalenge_ttl_s"),
    ("[sever]\nlisten = \"tcp:1\"\n", "sever"),
    ("[database]\nurl = \"mysql://x\"\n", "database.url"),
    ("[database]\nurl = \"not a url\"\n", "database.url"),
    ("[log]\nlevel = \"loud\"\n", "log.level"),
    ("[server]\nworkers = true\n", "server.workers"),
])
def test_bad_value_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text), environ={})
    assert key in err.value.message
    assert "\n" not in err.value.message


def test_malformed_toml_is_one_error_naming_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, "[server\nlisten=")
    with pytest.raises(ConfigError) as err:
        load_settings(p, environ={})
    assert str(p) in err.value.message and "TOML" in err.value.message


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_unknown_env_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BROKER_LOGIN_NOPE"):
        load_settings(write(tmp_path, ""), environ={"BROKER_LOGIN_NOPE": "1"})


def test_unrelated_broker_env_vars_are_ignored(tmp_path: Path) -> None:
    load_settings(write(tmp_path, ""), environ={"BROKER_TEST_POSTGRES_URL": "x"})


def test_config_is_found_in_the_documented_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    import broker.config as config

    system = tmp_path / "etc" / "smartcard-broker" / "broker.toml"
    system.parent.mkdir(parents=True)
    system.write_text("[login]\nchallenge_ttl_s = 3\n")
    monkeypatch.setattr(config, "SYSTEM_CONFIG", system)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert load_settings(environ={}).login.challenge_ttl_s == 3  # /etc when nothing else
    local = write(cwd, "[login]\nchallenge_ttl_s = 2\n")
    assert load_settings(environ={}).login.challenge_ttl_s == 2  # ./config/broker.toml first
    (tmp_path / "env").mkdir()
    env_file = write(tmp_path / "env", "[login]\nchallenge_ttl_s = 1\n")
    assert load_settings(environ={"BROKER_CONFIG": str(env_file)}).login.challenge_ttl_s == 1
    assert load_settings(local, environ={"BROKER_CONFIG": str(env_file)}
                         ).login.challenge_ttl_s == 2  # --config beats the environment
    system.unlink()
    local.unlink()
    defaults = load_settings(environ={})
    assert defaults.source == "<defaults>"
    assert defaults.state_path == config.SYSTEM_STATE_DIR  # never ./var of the current folder


def test_state_folder_and_catalogue_default_beside_the_config_and_in_the_package(
        tmp_path: Path) -> None:
    from broker.shipped import default_catalogue

    s = load_settings(write(tmp_path, ""), environ={})
    assert s.state_path == tmp_path / "config" / "var"
    assert s.database_url == f"sqlite:///{tmp_path / 'config' / 'var' / 'broker.db'}"
    assert s.catalogue_path == default_catalogue() and s.catalogue_path.is_file()
    moved = load_settings(write(tmp_path, '[server]\nstate_dir = "/srv/state"\n'), environ={})
    assert moved.database_url == "sqlite:////srv/state/broker.db"


@pytest.mark.parametrize("level", ["warning", "WARNING", "Warn", "debug", "ERROR"])
def test_log_level_accepts_python_names_in_any_case(tmp_path: Path, level: str) -> None:
    s = load_settings(write(tmp_path, f'[log]\nlevel = "{level}"\n'), environ={})
    assert s.log.level == level.lower()
    assert load_settings(write(tmp_path, ""), environ={"BROKER_LOG_LEVEL": level})


def test_a_config_under_etc_keeps_its_state_in_var_lib() -> None:
    import broker.config as config

    s = Settings(base_dir=Path("/etc/smartcard-broker"), source="/etc/smartcard-broker/b.toml")
    assert s.state_path == config.SYSTEM_STATE_DIR
