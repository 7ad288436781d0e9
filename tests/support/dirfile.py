"""Directory files (the declarative `broker admin apply` format) built from data.

Tests that need a directory describe it here instead of repeating TOML text: ``directory()``
gives one ``[[directory]]`` table with its users and WorkSpaces, ``user()`` and ``workspace()``
the entries, and ``render()`` joins directories into a file. test_admin_cli.py keeps literal
TOML on purpose: there the file format itself is under test.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any


def value(v: Any) -> str:
    """A TOML value: strings (JSON escapes are valid TOML basic-string escapes), booleans,
    integers, arrays and inline tables."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, Iterable):
        return "[" + ", ".join(value(x) for x in v) + "]"
    raise TypeError(f"no TOML for {v!r}")


def user(username: str, *, upn: str | None = "", **fields: Any) -> dict[str, Any]:
    """A user; ``upn`` defaults to ``<username>@corp.example`` (None: no UPN)."""
    if upn == "":
        upn = f"{username}@corp.example"
    return {"username": username, **({"upn": upn} if upn else {}), **fields}


def workspace(user: str, *, id: str | None = None, protocol: str = "WSP",
              running_mode: str = "ALWAYS_ON", state: str = "AVAILABLE",
              **fields: Any) -> dict[str, Any]:
    """A WorkSpace of ``user`` (id ``ws-<user>`` unless given), available by default."""
    return {"id": id or f"ws-{user}", "user": user, "protocol": protocol,
            "running_mode": running_mode, "state": state, **fields}


def directory(id: str, name: str, region: str = "us-gov-west-1", *,
              users: Iterable[Mapping[str, Any]] = (),
              workspaces: Iterable[Mapping[str, Any]] = (),
              registration_codes: int = 1, **settings: Any) -> str:
    """One ``[[directory]]`` table: settings in the order given, then users and WorkSpaces."""
    lines = ["[[directory]]", f"id = {value(id)}", f"name = {value(name)}",
             f"region = {value(region)}"]
    lines += [f"{k} = {value(v)}" for k, v in settings.items()]
    lines.append(f"registration_codes = {registration_codes}")
    for table, rows in (("user", users), ("workspace", workspaces)):
        for row in rows:
            lines += ["", f"[[directory.{table}]]"]
            lines += [f"{k} = {value(v)}" for k, v in row.items()]
    return "\n".join(lines) + "\n"


def render(*directories: str) -> str:
    return "\n".join(directories)
