"""`broker admin …`: the admin API's operations from the command line, on the database directly."""

from __future__ import annotations

import click


@click.group()
def admin() -> None:
    """Manage directories, trust, users, WorkSpaces, registration codes and admin tokens."""
