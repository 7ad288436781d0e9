"""Listening sockets bound before the workers start (``broker serve --workers``), so every
worker shares them; ``broker doctor`` binds the same way to check an endpoint is free."""

from __future__ import annotations

import socket

from broker.config import ConfigError


def parse_tcp_endpoint(endpoint: str) -> tuple[str, int, int]:
    """(host, port, backlog) of a ``tcp:PORT[:interface=H][:backlog=N]`` endpoint string."""
    parts = endpoint.split(":")
    if parts[0] not in ("tcp", "tcp6") or len(parts) < 2:
        raise ConfigError(message=f"--workers needs tcp: endpoints, not {endpoint!r}")
    host = "::" if parts[0] == "tcp6" else "0.0.0.0"
    backlog = 128
    port_s = None
    for part in parts[1:]:
        if "=" in part:
            k, v = part.split("=", 1)
            if k == "interface":
                host = v
            elif k == "backlog":
                backlog = int(v)
            elif k == "port":
                port_s = v
        else:
            port_s = part
    if port_s is None or not port_s.isdigit():
        raise ConfigError(message=f"no port in endpoint {endpoint!r}")
    return host, int(port_s), backlog


def bind_socket(endpoint: str) -> socket.socket:
    host, port, backlog = parse_tcp_endpoint(endpoint)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    sock.set_inheritable(True)
    return sock
