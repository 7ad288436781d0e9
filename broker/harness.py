"""One way to start a broker: pick ports, write a config, run `broker serve`, wait for /healthz.

Used by `broker demo`, the benchmarks (bench/) and the integration tests alike, so all three
start servers the same way and see the same failures (an early exit prints the log).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class HarnessError(RuntimeError):
    """The broker process did not come up (the message carries its log)."""


#: vsmartcard vpcd's fixed ports (its readers 0x8C7B-0x8C7F: 35963-35967), inside Linux's
#: ephemeral range: a broker listening there would keep pcscd's virtual reader from binding
VPCD_PORTS = range(35963, 35968)
_handed_out: deque[int] = deque(maxlen=256)
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now, and not one this process handed out in
    its last 256 calls: the kernel can give two bind(0) calls in a row the same port, and a
    broker's client and admin listeners (two calls) then collide ("Address already in use")."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with _handed_out_lock:
            if port not in _handed_out and port not in VPCD_PORTS:
                _handed_out.append(port)
                return port


@dataclass
class BrokerProcess:
    """A `broker serve --dev` process with its own folder, config and ports."""

    base: Path
    db_url: str
    port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    log_level: str = "info"
    #: Source address for the harness's own connections to the client port (a 127.x.y.z other
    #: than a PROXY-protocol balancer's, which must send a header).
    client_source: str | None = None

    @property
    def cafile(self) -> Path:
        return self.base / "var" / "dev-tls" / "dev-cert.pem"

    @property
    def config_path(self) -> Path:
        return self.base / "config" / "broker.toml"

    @property
    def log_path(self) -> Path:
        return self.base / "serve.log"

    def write_config(self, extra: str = "") -> None:
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            f'[server]\nlisten = "tcp:{self.port}:interface=127.0.0.1"\n'
            f'admin_listen = "tcp:{self.admin_port}:interface=127.0.0.1"\n'
            f"workers = {self.workers}\nshutdown_grace_s = 5.0\n"
            f'state_dir = "{self.base / "var"}"\n'
            f'[database]\nurl = "{self.db_url}"\n'
            f'[log]\nformat = "json"\nlevel = "{self.log_level}"\n' + extra)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "broker.cli", *args]

    def full_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
        env.update(self.env)
        return env

    def run_cli(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        """`broker ARGS --config …` in the broker's folder; HarnessError when it fails."""
        proc = subprocess.run(self.command(*args, "--config", str(self.config_path)),
                              capture_output=True, text=True, env=self.full_env(), input=input,
                              cwd=self.base, timeout=120)
        if check and proc.returncode != 0:
            raise HarnessError(f"broker {' '.join(args)} failed ({proc.returncode}):\n"
                               f"{proc.stdout}\n{proc.stderr}")
        return proc

    def start(self, *extra: str, wait: bool = True) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command("serve", "--dev", "--config", str(self.config_path), *extra),
            stdout=log, stderr=subprocess.STDOUT, env=self.full_env(), cwd=self.base)
        log.close()
        if wait:
            self.wait_ready()

    def healthy(self) -> bool:
        """/healthz answers 200 over TLS verified against the dev certificate."""
        if not self.cafile.exists():
            return False
        try:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=2,
                context=ssl.create_default_context(cafile=str(self.cafile)),
                source_address=(self.client_source, 0) if self.client_source else None)
            try:
                conn.request("GET", "/healthz")
                return conn.getresponse().status == 200
            finally:
                conn.close()
        except (OSError, ssl.SSLError, http.client.HTTPException):
            return False

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise HarnessError(f"broker exited early ({self.proc.returncode}):\n"
                                   + self.logs())
            if self.healthy():
                return
            time.sleep(0.1)
        raise HarnessError("broker did not become healthy:\n" + self.logs())

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

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
