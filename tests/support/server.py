"""A real `broker serve` process for integration tests, and a small HTTPS JSON client.

The client verifies the broker's TLS certificate (the --dev self-signed one, pinned as the only
CA), so every integration test runs over real, verified TLS.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
class BrokerProcess:
    base: Path
    db_url: str
    port: int
    admin_port: int
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 1

    @property
    def cafile(self) -> Path:
        return self.base / "var" / "dev-tls" / "dev-cert.pem"

    def client(self, token: str | None = None, source: str | None = None) -> ApiClient:
        return ApiClient("127.0.0.1", self.port, self.cafile, token, source=source)

    def admin(self, token: str | None = None) -> ApiClient:
        return ApiClient("127.0.0.1", self.admin_port, self.cafile, token)

    @property
    def config_path(self) -> Path:
        return self.base / "config" / "broker.toml"

    def write_config(self, extra: str = "") -> None:
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            f'[server]\nlisten = "tcp:{self.port}:interface=127.0.0.1"\n'
            f'admin_listen = "tcp:{self.admin_port}:interface=127.0.0.1"\n'
            f"workers = {self.workers}\nshutdown_grace_s = 5.0\n"
            f'[database]\nurl = "{self.db_url}"\n'
            f'[regions]\ncatalogue = "{REPO / "config" / "regions.toml"}"\n'
            f'[log]\nformat = "json"\nlevel = "info"\n' + extra)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "broker.cli", *args]

    def run_cli(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.command(*args, "--config", str(self.config_path)),
                              capture_output=True, text=True, env=self.full_env(), input=input,
                              cwd=self.base, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"broker {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def full_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
        env.update(self.env)
        return env

    def start(self, *extra: str, wait: bool = True) -> None:
        log = open(self.base / "serve.log", "ab")
        self.proc = subprocess.Popen(
            self.command("serve", "--dev", "--config", str(self.config_path), *extra),
            stdout=log, stderr=subprocess.STDOUT, env=self.full_env(), cwd=self.base)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"broker exited early ({self.proc.returncode}):\n"
                                     + self.logs())
            try:
                if self.cafile.exists() and self.client().get("/healthz").status == 200:
                    return
            except (OSError, ssl.SSLError, http.client.HTTPException):
                pass
            time.sleep(0.1)
        raise AssertionError("broker did not become healthy:\n" + self.logs())

    def logs(self) -> str:
        p = self.base / "serve.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code
