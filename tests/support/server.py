"""A real `broker serve` process for integration tests, and a small HTTPS JSON client.

The client verifies the broker's TLS certificate (the --dev self-signed one, pinned as the only
CA), so every integration test runs over real, verified TLS.
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
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

    def run_cli(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            return super().run_cli(*args, input=input, check=check)
        except harness.HarnessError as exc:
            raise AssertionError(str(exc)) from None

    def wait_ready(self, timeout: float = 30.0) -> None:
        try:
            super().wait_ready(timeout)
        except harness.HarnessError as exc:
            raise AssertionError(str(exc)) from None
