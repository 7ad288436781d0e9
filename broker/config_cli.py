"""`broker config init [PATH] [--for local|systemd] [--force]`: a commented starting config.

The file is the shipped, documented ``broker.toml`` (every key with its default and a comment),
so there is one text to keep right; ``--for systemd`` fills in the places the unit in
docs/deploy/smartcard-broker.service expects (config and TLS under /etc/smartcard-broker, state
under /var/lib/smartcard-broker).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import click

from broker.cli_common import EXIT_USAGE, fail
from broker.config import LOCAL_CONFIG, SYSTEM_CONFIG, ConfigError, load_settings

#: Per target: default path, keys to set (section-less: the shipped file has each key once),
#: and what to do next.
TARGETS: dict[str, tuple[Path, dict[str, str], str]] = {
    "local": (LOCAL_CONFIG, {}, "`broker migrate`, then `broker serve --dev` (a self-signed "
                                "certificate) or set server.tls_cert/tls_key; `broker doctor` "
                                "checks it all"),
    "systemd": (SYSTEM_CONFIG, {
        "tls_cert": "/etc/smartcard-broker/tls/broker.pem",
        "tls_key": "/etc/smartcard-broker/tls/broker.key",
    }, "put the TLS chain and key at /etc/smartcard-broker/tls/broker.pem and broker.key "
       "(readable by the smartcard-broker user), set database.url for PostgreSQL if you run "
       "several brokers, then `broker migrate`, `broker doctor` and "
       "`systemctl start smartcard-broker`"),
}


def render(target: str) -> str:
    """The shipped broker.toml with ``target``'s values filled in and a header saying so."""
    from broker.shipped import shipped_path

    text = shipped_path("config", "broker.toml").read_text()
    for key, value in TARGETS[target][1].items():
        text, n = re.subn(rf'^{key} = "[^"\n]*"$', f'{key} = "{value}"', text, count=1,
                          flags=re.MULTILINE)
        if n != 1:  # the shipped file lost the key: a bug here, not the operator's
            raise RuntimeError(f"shipped broker.toml has no line for {key}")
    today = dt.datetime.now(dt.UTC).date().isoformat()
    return (f"# Written by `broker config init --for {target}` on {today}: the documented "
            "defaults,\n# ready to edit. Delete a key to keep its default.\n#\n" + text)


@click.group("config")
def config_group() -> None:
    """Write or inspect broker configuration files."""


@config_group.command("init")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--for", "target", type=click.Choice(sorted(TARGETS)), default="local",
              show_default=True,
              help="local: ./config/broker.toml for a trial; systemd: "
                   "/etc/smartcard-broker/broker.toml for docs/deploy/smartcard-broker.service "
                   "(PATH, else $BROKER_CONFIG, overrides the place).")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path: Path | None, target: str, force: bool) -> None:
    """Write a commented starting config (every key, its default and what it does)."""
    # Where the broker will look: $BROKER_CONFIG when set, else the target's usual place.
    dest = path or Path(os.environ.get("BROKER_CONFIG") or TARGETS[target][0])
    if dest.exists() and not force:
        fail(f"{dest} exists; nothing written (pass --force to overwrite)", EXIT_USAGE)
    text = render(target)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
    except OSError as exc:
        fail(f"cannot write {dest}: {exc.strerror or exc}")
    try:
        load_settings(dest, environ={})
    except ConfigError as exc:  # would be a bug in render(): say so rather than leave it
        fail(f"wrote {dest} but it does not load: {exc.message}")
    click.echo(f"wrote {dest} (for {target}). Next: {TARGETS[target][2]}.")
