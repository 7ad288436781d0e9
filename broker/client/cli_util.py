"""What every `broker-client` command module shares: the one-line ``error:`` exit, warnings."""

from __future__ import annotations

import sys
from typing import NoReturn

import click


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def warn(line: str) -> None:
    """A warning line on stderr (e.g. the untested card type)."""
    click.secho(line, fg="yellow", err=True)
