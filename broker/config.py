"""Typed settings: config/broker.toml, then BROKER_<SECTION>_<KEY> environment, then flags.

Every key has a default here and a comment in config/broker.toml. A bad file, an unknown key or a
value of the wrong type raises :class:`ConfigError` whose message names the key (and the file), so
the CLI can print one line and exit non-zero instead of a traceback.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, get_type_hints

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from broker.codes import Code
from broker.errors import BrokerError

ENV_PREFIX = "BROKER_"
#: Looked for, in this order, when neither --config nor $BROKER_CONFIG names a file.
LOCAL_CONFIG = Path("config/broker.toml")
SYSTEM_CONFIG = Path("/etc/smartcard-broker/broker.toml")
#: The state folder when no config file is found (systemd's StateDirectory=smartcard-broker).
SYSTEM_STATE_DIR = Path("/var/lib/smartcard-broker")
LOG_LEVELS = {"debug": "DEBUG", "info": "INFO", "warn": "WARNING", "warning": "WARNING",
              "error": "ERROR"}


class ConfigError(BrokerError):
    code = Code.CONFIG_INVALID


class Bound(enum.Enum):
    """A range a numeric setting must be in, declared on its type (checked by _check_bounds)."""

    POSITIVE = "must be greater than 0"
    NON_NEGATIVE = "must not be negative"


PositiveInt = Annotated[int, Bound.POSITIVE]
PositiveFloat = Annotated[float, Bound.POSITIVE]
NonNegativeInt = Annotated[int, Bound.NON_NEGATIVE]
NonNegativeFloat = Annotated[float, Bound.NON_NEGATIVE]


@dataclass(frozen=True)
class ServerSettings:
    listen: str = "tcp:8443"
    admin_listen: str = "tcp:8444:interface=127.0.0.1"
    tls_cert: str = ""
    tls_key: str = ""
    workers: PositiveInt = 1
    broker_id: str = "smartcard-broker"
    max_body_bytes: PositiveInt = 65536
    shutdown_grace_s: NonNegativeFloat = 10.0
    threadpool_size: PositiveInt = 10
    request_head_timeout_s: PositiveFloat = 10.0
    request_body_timeout_s: PositiveFloat = 30.0
    #: Folder for the default SQLite database and the --dev TLS pair; "" = var/ beside the
    #: config file (/var/lib/smartcard-broker for a config under /etc or built-in defaults).
    state_dir: str = ""
    #: Also serve /metrics on the client listener (it is always on the admin listener).
    metrics_on_client: bool = False
    #: TLS session resumption (session tickets and a session cache) for returning clients.
    tls_session_resumption: bool = True
    #: The TLS ticket key (and context) changes at each multiple of this many seconds, in every
    #: worker at once (broker/web/ticket_keys.py).
    tls_ticket_key_rotation_s: PositiveInt = 3600
    #: Opt-in: workers share one TLS ticket key (broker/web/ticket_keys.py, probed in a child
    #: process first). Needs workers > 1. The supported route is TLS termination at HAProxy.
    tls_shared_ticket_keys: bool = False
    #: PROXY protocol on the client listener: "off", "v1" or "v2" (HAProxy send-proxy-v2),
    #: believed only from ``proxy_balancers`` (broker/web/proxy_protocol.py).
    proxy_protocol: str = "off"
    #: Balancer addresses or networks ("10.0.0.5", "10.0.1.0/24"); in the environment,
    #: comma-separated.
    proxy_balancers: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatabaseSettings:
    #: "" = SQLite file broker.db in the state folder.
    url: str = ""
    pool_size: PositiveInt = 10
    retries: NonNegativeInt = 5


@dataclass(frozen=True)
class LoginSettings:
    challenge_ttl_s: PositiveInt = 60
    ticket_ttl_s: PositiveInt = 300
    auth_token_ttl_s: PositiveInt = 900
    challenges_per_code_per_minute: PositiveInt = 30
    challenges_per_address_per_minute: PositiveInt = 60
    challenges_per_directory_per_minute: PositiveInt = 6000
    challenges_per_prefix_per_minute: PositiveInt = 300
    max_failures: PositiveInt = 5
    failures_per_user: PositiveInt = 10
    lockout_s: NonNegativeInt = 300
    failures_per_address: PositiveInt = 20
    failures_per_challenge: PositiveInt = 3
    in_session_challenges_per_token_per_minute: PositiveInt = 30
    in_session_challenges_per_address_per_minute: PositiveInt = 300
    connects_per_token_per_minute: PositiveInt = 60
    connects_per_address_per_minute: PositiveInt = 600


@dataclass(frozen=True)
class RegistrationSettings:
    rotation_grace_s: NonNegativeInt = 86400


@dataclass(frozen=True)
class SessionSettings:
    heartbeat_timeout_s: PositiveInt = 90
    sweep_interval_s: PositiveFloat = 15.0
    gateway_host: str = "gateway.workspaces.example"
    gateway_port: int = 4195
    signing_key_rotation_days: int = 30


@dataclass(frozen=True)
class WorkSpaceSettings:
    start_delay_s: NonNegativeFloat = 5.0
    stop_delay_s: NonNegativeFloat = 2.0
    auto_stop_idle_s: float = 3600.0


@dataclass(frozen=True)
class RegionSettings:
    #: "" = the catalogue shipped with the broker.
    catalogue: str = ""


@dataclass(frozen=True)
class KeySettings:
    #: Base64 key encrypting the signing keys in the database; "" = state folder's own.
    encryption_key_file: str = ""
    #: Seconds a process signs with its cached current key before reading the key table
    #: again: how soon every process follows a `broker keys rotate`.
    ring_recheck_s: PositiveFloat = 30.0


@dataclass(frozen=True)
class LogSettings:
    level: str = "info"
    format: str = "json"


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    login: LoginSettings = field(default_factory=LoginSettings)
    registration: RegistrationSettings = field(default_factory=RegistrationSettings)
    sessions: SessionSettings = field(default_factory=SessionSettings)
    workspaces: WorkSpaceSettings = field(default_factory=WorkSpaceSettings)
    regions: RegionSettings = field(default_factory=RegionSettings)
    log: LogSettings = field(default_factory=LogSettings)
    keys: KeySettings = field(default_factory=KeySettings)
    #: Folder that relative paths (SQLite file, catalogue, TLS files) are resolved against:
    #: the config file's folder (the current folder only on built-in defaults).
    base_dir: Path = field(default_factory=Path.cwd)
    #: Where the settings came from, for messages.
    source: str = "<defaults>"

    def path(self, value: str) -> Path:
        """Resolve a configured path against :attr:`base_dir`."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @property
    def state_path(self) -> Path:
        """The state folder (default SQLite database, --dev TLS pair, demo files)."""
        if self.server.state_dir:
            return self.path(self.server.state_dir)
        # Built-in defaults, or a config under /etc (read-only under systemd's
        # ProtectSystem=strict): the FHS place for state.
        if self.source == "<defaults>" or self.base_dir.is_relative_to("/etc"):
            return SYSTEM_STATE_DIR
        return self.base_dir / "var"

    @property
    def catalogue_path(self) -> Path:
        """The region catalogue: the configured file, else the one shipped with the broker."""
        if self.regions.catalogue:
            return self.path(self.regions.catalogue)
        from broker.shipped import default_catalogue

        return default_catalogue()

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite database file, or None for PostgreSQL and in-memory SQLite."""
        parsed = make_url(self.database_url)
        if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
            return None
        return Path(parsed.database)

    @property
    def database_url(self) -> str:
        """The database URL with a relative SQLite file made absolute against base_dir."""
        url = self.database.url
        if not url:
            return f"sqlite:///{self.state_path / 'broker.db'}"
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            rest = url[len(prefix):]
            if rest and rest != ":memory:":
                return prefix + str(self.path(rest))
        return url

    def replace(self, section: str, **values: Any) -> Settings:
        """A copy with some keys of one section changed (validated like the file)."""
        current = getattr(self, section)
        checked = {k: _coerce(f"{section}.{k}", v, _field_types(type(current))[k], self.source)
                   for k, v in values.items() if v is not None}
        return dataclasses.replace(self, **{section: dataclasses.replace(current, **checked)})


_SECTIONS: dict[str, type] = {name: tp for name, tp in get_type_hints(Settings).items()
             if name not in ("base_dir", "source")}


def _field_types(cls: type) -> dict[str, type]:
    return dict(get_type_hints(cls))


def _coerce(key: str, value: Any, tp: type, source: str) -> Any:
    """Check ``value`` against ``tp``; strings from the environment are converted."""
    where = f"{source}: " if source else ""
    if tp == tuple[str, ...]:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(message=f"{where}{key} must be a list of strings, not {value!r}",
                          details={"key": key})
    if isinstance(value, str) and tp is not str:
        text = value.strip()
        try:
            if tp is bool:
                if text.lower() in ("1", "true", "yes", "on"):
                    return True
                if text.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(text)
            return tp(text)
        except ValueError:
            raise ConfigError(message=f"{where}{key} must be {_type_name(tp)}, not {value!r}",
                              details={"key": key}) from None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(message=f"{where}{key} must be {_type_name(tp)}, not {value!r}",
                          details={"key": key})
    return value


def _type_name(tp: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, tp.__name__)


def _check_values(settings: Settings) -> None:
    """Range checks that types alone do not express."""
    s = settings
    where = f"{s.source}: "
    if s.server.tls_shared_ticket_keys and s.server.workers == 1:
        raise ConfigError(message=f"{where}server.tls_shared_ticket_keys needs server.workers "
                                  "> 1: one process already resumes its own tickets (for "
                                  "several nodes, terminate TLS at HAProxy instead)",
                          details={"key": "server.tls_shared_ticket_keys"})
    _check_bounds(s, where)
    if s.log.level.lower() not in LOG_LEVELS:
        raise ConfigError(message=f"{where}log.level must be one of debug, info, warning, "
                                  f"error, not {s.log.level!r}", details={"key": "log.level"})
    if s.log.format.lower() not in ("json", "text"):
        raise ConfigError(message=f"{where}log.format must be json or text",
                          details={"key": "log.format"})
    if s.database.url:
        check_database_url(s.database.url, where)
    _check_proxy(s.server, where)


def _check_bounds(settings: Settings, where: str) -> None:
    """Every setting declared PositiveInt, NonNegativeFloat, … in its range."""
    for section, cls in _SECTIONS.items():
        values = getattr(settings, section)
        for name, hint in get_type_hints(cls, include_extras=True).items():
            bound = next((m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Bound)),
                         None)
            value = getattr(values, name)
            if bound is None or (value > 0 if bound is Bound.POSITIVE else value >= 0):
                continue
            key = f"{section}.{name}"
            raise ConfigError(message=f"{where}{key} {bound.value}, not {value!r}",
                              details={"key": key})


def _check_proxy(server: ServerSettings, where: str) -> None:
    versions = PROXY_VERSIONS
    if server.proxy_protocol not in versions:
        raise ConfigError(message=f"{where}server.proxy_protocol must be one of "
                                  f"{', '.join(versions)}, not {server.proxy_protocol!r}",
                          details={"key": "server.proxy_protocol"})
    try:
        balancers = parse_balancers(server.proxy_balancers)
    except ValueError as exc:
        raise ConfigError(message=f"{where}server.proxy_balancers: {exc}",
                          details={"key": "server.proxy_balancers"}) from None
    if server.proxy_protocol != "off" and not balancers:
        raise ConfigError(message=f"{where}server.proxy_protocol = {server.proxy_protocol!r} "
                                  "needs server.proxy_balancers (the balancers' addresses)",
                          details={"key": "server.proxy_balancers"})


#: server.proxy_protocol values.
PROXY_VERSIONS = ("off", "v1", "v2")
ProxyNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_balancers(entries: Iterable[str]) -> list[ProxyNetwork]:
    """server.proxy_balancers as networks; ValueError naming an entry that is neither an IP
    address nor a CIDR network."""
    nets: list[ProxyNetwork] = []
    for entry in entries:
        text = entry.strip()
        if not text:
            continue
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {text!r}") from None
    return nets


def check_database_url(url: str, where: str = "") -> None:
    """Raise ConfigError unless ``url`` is a SQLite or PostgreSQL SQLAlchemy URL."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError(message=f"{where}database.url is not a database URL: {url!r}",
                          details={"key": "database.url"}) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            message=f"{where}database.url must be sqlite:///… or postgresql+psycopg://…, "
                    f"not {parsed.get_backend_name()!r}",
            details={"key": "database.url"})


def find_config(path: str | os.PathLike[str] | None,
                env: Mapping[str, str]) -> tuple[Path | None, bool]:
    """(config file, named explicitly): --config, else $BROKER_CONFIG, else
    ./config/broker.toml, else /etc/smartcard-broker/broker.toml, else (None, False)."""
    if path is not None:
        return Path(path), True
    if env.get("BROKER_CONFIG"):
        return Path(env["BROKER_CONFIG"]), True
    for candidate in (LOCAL_CONFIG, SYSTEM_CONFIG):
        if candidate.is_file():
            return candidate, False
    return None, False


def load_settings(path: str | os.PathLike[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from the file :func:`find_config` picks (or built-in defaults), apply
    environment overrides, validate. Relative paths resolve against the config file's folder.

    Raises ConfigError naming the file and key for an unreadable or malformed file, an unknown
    section or key, a wrong type, or an out-of-range value.
    """
    env = os.environ if environ is None else environ
    cfg_path, _explicit = find_config(path, env)
    data: dict[str, Any] = {}
    source = "<defaults>"
    base_dir = Path.cwd()
    if cfg_path is not None:
        source = str(cfg_path)
        try:
            with open(cfg_path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(message=f"config file not found: {cfg_path}",
                              details={"path": str(cfg_path)}) from None
        except (OSError, IsADirectoryError) as exc:
            raise ConfigError(message=f"cannot read config file {cfg_path}: {exc.strerror or exc}",
                              details={"path": str(cfg_path)}) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(message=f"{cfg_path}: not valid TOML: {exc}",
                              details={"path": str(cfg_path)}) from None
        base_dir = cfg_path.resolve().parent

    sections: dict[str, dict[str, Any]] = {}
    for name, section in data.items():
        if name not in _SECTIONS:
            raise ConfigError(message=f"{source}: unknown section [{name}] (known: "
                                      f"{', '.join(sorted(_SECTIONS))})", details={"key": name})
        if not isinstance(section, dict):
            raise ConfigError(message=f"{source}: {name} must be a table [{name}]",
                              details={"key": name})
        types = _field_types(_SECTIONS[name])
        for key, value in section.items():
            if key not in types:
                raise ConfigError(message=f"{source}: unknown key {name}.{key}",
                                  details={"key": f"{name}.{key}"})
            sections.setdefault(name, {})[key] = _coerce(f"{name}.{key}", value, types[key],
                                                         source)

    for var, raw in env.items():
        if not var.startswith(ENV_PREFIX) or var == "BROKER_CONFIG":
            continue
        rest = var[len(ENV_PREFIX):].lower()
        section_name = next((s for s in _SECTIONS if rest.startswith(s + "_")), None)
        if section_name is None:
            continue  # not ours (e.g. BROKER_TEST_POSTGRES_URL)
        key = rest[len(section_name) + 1:]
        types = _field_types(_SECTIONS[section_name])
        if key not in types:
            raise ConfigError(message=f"environment variable {var}: unknown key "
                                      f"{section_name}.{key}", details={"key": var})
        sections.setdefault(section_name, {})[key] = _coerce(var, raw, types[key], "")

    log_section = sections.get("log", {})
    for key in ("level", "format"):
        if isinstance(log_section.get(key), str):
            log_section[key] = log_section[key].strip().lower()
    built = {name: cls(**sections.get(name, {})) for name, cls in _SECTIONS.items()}
    settings = Settings(**built, base_dir=base_dir, source=source)
    _check_values(settings)
    return settings
