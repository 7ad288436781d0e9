"""A fork server for the tests' `broker serve` processes.

A new Python spends ~0.6 s of CPU importing the broker (SQLAlchemy, cryptography, Twisted Web,
the service layer) before `serve` does anything, and the suite starts a broker for ~330 tests.
This server imports those modules once and forks a child per broker; the child sets the
environment, working folder and log the subprocess would have had and runs the same
``broker.cli`` entry point with the same arguments. Twisted's reactor is not imported before
the fork (each child installs its own), and no thread runs in the server.

The test process talks to the server over a Unix socket: one connection per child, which
answers the child's pid and later its exit status; :class:`ForkedProcess` offers the part of
:class:`subprocess.Popen` the harness and the tests use (pid, poll, wait, send_signal,
terminate, kill, returncode). ``BROKER_TEST_FORKSERVER=0`` turns it off (plain subprocesses).
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

#: Imported once in the server; none of them imports twisted.internet.reactor.
PRELOAD = ("sqlalchemy", "sqlalchemy.orm", "alembic.command", "alembic.runtime.migration",
           "alembic.script", "cryptography.x509", "OpenSSL", "twisted.internet.ssl",
           "twisted.web.server", "twisted.web.resource", "broker.cli", "broker.cli_common",
           "broker.config", "broker.logs", "broker.store.db", "broker.store.models",
           "broker.store.migrate", "broker.service.context", "broker.service.wiring",
           "broker.service.sessions", "broker.admin.registry", "broker.admin.framework",
           "broker.pki.chain")


def enabled() -> bool:
    return os.environ.get("BROKER_TEST_FORKSERVER", "1") != "0"


# --------------------------------------------------------------------------- server side

def _run_child(request: dict[str, Any]) -> int:
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    from broker import cli

    argv = list(request["argv"])
    sys.argv = [cli.__file__, *argv]
    try:
        cli.main(args=argv, prog_name="python -m broker.cli")
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    except BaseException:
        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    return code


def serve(path: str) -> None:
    """The server's loop: fork a child per request, report each child's exit status."""
    for name in PRELOAD:
        importlib.import_module(name)
    assert "twisted.internet.reactor" not in sys.modules, "the reactor must not be forked"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(sys.stdin, selectors.EVENT_READ, "parent")  # EOF: the test process is gone
    waiting: dict[int, socket.socket] = {}
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        for key, _ in sel.select(timeout=0.05):
            if key.data == "parent":
                if not os.read(sys.stdin.fileno(), 4096):
                    return
            elif key.data == "accept":
                conn, _ = listener.accept()
                request = json.loads(conn.makefile("rb").readline())
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:  # the child: drop the server's sockets, become the broker
                    code = 1
                    try:
                        sel.close()
                        listener.close()
                        conn.close()
                        for other in waiting.values():
                            other.close()
                        code = _run_child(request)
                    finally:
                        try:
                            atexit._run_exitfuncs()
                            sys.stdout.flush()
                            sys.stderr.flush()
                        finally:
                            os._exit(code)
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
                waiting[pid] = conn
        while waiting:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            done = waiting.pop(pid, None)
            if done is not None:
                conn = done
                try:
                    conn.sendall(json.dumps(
                        {"returncode": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
                except OSError:
                    pass
                conn.close()


# --------------------------------------------------------------------------- client side

class ForkedProcess:
    """The forked broker, as much of :class:`subprocess.Popen` as the tests use."""

    def __init__(self, args: list[str], conn: socket.socket, pid: int) -> None:
        self.args = args
        self.pid = pid
        self.returncode: int | None = None
        self._conn = conn
        self._buffer = b""

    def _read_status(self, timeout: float | None) -> None:
        self._conn.settimeout(timeout)
        try:
            while b"\n" not in self._buffer:
                chunk = self._conn.recv(4096)
                if not chunk:
                    raise RuntimeError(f"fork server lost broker pid {self.pid}")
                self._buffer += chunk
        finally:
            self._conn.settimeout(None)
        self.returncode = int(json.loads(self._buffer.split(b"\n", 1)[0])["returncode"])
        self._conn.close()

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self._read_status(0.0)
            except (BlockingIOError, TimeoutError):
                pass
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            try:
                self._read_status(timeout)
            except TimeoutError:
                raise subprocess.TimeoutExpired(self.args, timeout or 0) from None
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    def __init__(self) -> None:
        from broker.harness import REPO

        self.folder = tempfile.mkdtemp(prefix="broker-forkserver-")
        self.path = str(Path(self.folder) / "sock")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.forkserver",
                                      self.path], cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError("the broker fork server did not start")

    def spawn(self, argv: list[str], env: dict[str, str], cwd: Path,
              log: Path) -> ForkedProcess:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(self.path)
        conn.sendall(json.dumps({"argv": argv, "env": env, "cwd": str(cwd),
                                 "log": str(log)}).encode() + b"\n")
        reply = b""
        while b"\n" not in reply:
            chunk = conn.recv(4096)
            if not chunk:
                raise RuntimeError("the broker fork server closed the connection")
            reply += chunk
        line, rest = reply.split(b"\n", 1)
        proc = ForkedProcess(["broker", *argv], conn, int(json.loads(line)["pid"]))
        proc._buffer = rest
        return proc

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.unlink(self.path)
            os.rmdir(self.folder)
        except OSError:
            pass


_server: ForkServer | None = None


def spawn(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> ForkedProcess:
    """Fork `broker ARGV` with ``env`` in ``cwd``, stdout and stderr appended to ``log``."""
    global _server
    if _server is None or _server.proc.poll() is not None:
        _server = ForkServer()
        atexit.register(_server.close)
    return _server.spawn(argv, env, cwd, log)


if __name__ == "__main__":
    serve(sys.argv[1])
