"""A real `broker serve` process for integration tests, and a small HTTPS JSON client.

The client verifies the broker's TLS certificate (the --dev self-signed one, pinned as the only
CA), so every integration test runs over real, verified TLS.

`broker admin …` runs in this process (click's CliRunner: the same command objects, options,
output and exit codes, with the broker's environment and folder) instead of a new Python that
spends most of a second importing; ``run_cli(..., spawn=True)`` runs the real subprocess, as the
install test and a smoke test do.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker import harness
from broker.harness import REPO, free_port

__all__ = ["REPO", "ApiClient", "BrokerProcess", "Response", "free_port"]


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None


@dataclass
class ApiClient:
    host: str
    port: int
    cafile: Path
    token: str | None = None
    timeout: float = 30.0
    #: Source address to connect from (any 127.x.y.z: tests that need distinct clients).
    source: str | None = None
    _ctx: ssl.SSLContext | None = field(default=None, repr=False)

    def context(self) -> ssl.SSLContext:
        if self._ctx is None:
            self._ctx = ssl.create_default_context(cafile=str(self.cafile))
        return self._ctx

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                headers: dict[str, str] | None = None, token: str | None = None) -> Response:
        conn = http.client.HTTPSConnection(
            self.host, self.port, context=self.context(), timeout=self.timeout,
            source_address=(self.source, 0) if self.source else None)
        hdrs = {"content-type": "application/json"}
        bearer = token or self.token
        if bearer:
            hdrs["authorization"] = f"Bearer {bearer}"
        hdrs.update(headers or {})
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        ctype = resp.getheader("content-type") or ""
        parsed: Any = payload
        if "json" in ctype and payload:
            parsed = json.loads(payload)
        return Response(resp.status, parsed, {k.lower(): v for k, v in resp.getheaders()})

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.request("POST", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Response:
        return self.request("DELETE", path, **kw)


@dataclass
class BrokerProcess(harness.BrokerProcess):
    """The harness's broker process plus verified-TLS API clients for tests."""

    def client(self, token: str | None = None, source: str | None = None) -> ApiClient:
        return ApiClient("127.0.0.1", self.port, self.cafile, token,
                         source=source or self.client_source)

    def admin(self, token: str | None = None) -> ApiClient:
        return ApiClient("127.0.0.1", self.admin_port, self.cafile, token)

    def run_cli(self, *args: str, input: str | None = None, check: bool = True,
                spawn: bool = False) -> subprocess.CompletedProcess[str]:
        """`broker ARGS --config …`: ``admin`` commands in-process unless ``spawn``, every
        other command (serve, migrate, doctor, …) as a real subprocess."""
        if spawn or not args or args[0] != "admin":
            try:
                return super().run_cli(*args, input=input, check=check)
            except harness.HarnessError as exc:
                raise AssertionError(str(exc)) from None
        proc = self.run_in_process(*args, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"broker {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def run_in_process(self, *args: str,
                       input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run `broker ARGS --config …` through click's CliRunner with what the subprocess
        would see: this broker's BROKER_* environment only, its folder as the working
        directory, stdin from ``input``. An uncaught exception becomes the traceback on stderr
        and exit code 1, as in a real process."""
        from click.testing import CliRunner

        from broker.cli import main

        argv = [*args, "--config", str(self.config_path)]
        env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("BROKER_")}
        env.update(self.env)
        with _in_folder(self.base), _disposing_databases():
            result = CliRunner().invoke(main, argv, input=input, env=env, prog_name="broker")
        stderr = result.stderr
        if result.exc_info is not None and not isinstance(result.exception, SystemExit):
            stderr += "Traceback (most recent call last):\n" + "".join(
                traceback.format_exception(*result.exc_info))
        return subprocess.CompletedProcess(["broker", *argv], result.exit_code, result.stdout,
                                           stderr)

    def start(self, *extra: str, wait: bool = True) -> None:
        """`broker serve --dev …` forked from the fork server (tests/support/forkserver.py):
        the same entry point, arguments, environment, folder and log as the subprocess,
        without importing the broker again."""
        from tests.support import forkserver

        if not forkserver.enabled():
            super().start(*extra, wait=wait)
            return
        self.proc = forkserver.spawn(  # type: ignore[assignment]
            ["serve", "--dev", "--config", str(self.config_path), *extra],
            self.full_env(), self.base, self.log_path)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        try:
            super().wait_ready(timeout)
        except harness.HarnessError as exc:
            raise AssertionError(str(exc)) from None


@contextmanager
def _in_folder(path: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextmanager
def _disposing_databases() -> Iterator[None]:
    """Dispose every Database a command opened: a process exit would close its connections,
    an in-process run must not leave them to the garbage collector."""
    from broker.store.db import Database

    made: list[Database] = []
    original = Database.__init__

    def tracked(db: Database, *args: Any, **kw: Any) -> None:
        original(db, *args, **kw)
        made.append(db)

    Database.__init__ = tracked  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        Database.__init__ = original  # type: ignore[method-assign,assignment]
        for db in made:
            db.dispose()
