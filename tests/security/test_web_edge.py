"""Security round 2 at the web edge (issue 30): bounded metric labels, control characters and
non-UTF-8 paths, trickled bodies, TLS suites and per-listener tickets, headers that say less,
console sign-in from the form body only and throttled — against a real broker over real TLS.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import socket
import ssl
import time
from typing import Any

import pytest

from tests.security.conftest import Secured

pytestmark = pytest.mark.slow


def _connection(secured: Secured, port: int) -> http.client.HTTPSConnection:
    ctx = ssl.create_default_context(cafile=str(secured.broker.cafile))
    return http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10,
                                       source_address=(secured.address(), 0))


def _series(secured: Secured) -> list[str]:
    """The request-driven series of /metrics (the database gauges come and go with data)."""
    r = secured.broker.admin().get("/metrics")
    assert r.status == 200
    text = r.body.decode() if isinstance(r.body, bytes) else str(r.body)
    return [line for line in text.splitlines()
            if re.match(r"broker_(http|refusals|logins|throttled)", line)]


def _send_many(secured: Secured, port: int, requests: list[tuple[str, str]]) -> set[int]:
    statuses: set[int] = set()
    conn = _connection(secured, port)
    for method, path in requests:
        for _attempt in range(2):
            try:
                conn.request(method, path, headers={"content-length": "0"})
                resp = conn.getresponse()
                resp.read()
                statuses.add(resp.status)
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                conn = _connection(secured, port)
    conn.close()
    return statuses


# ----------------------------------------------------------------------------- item 1

def test_a_thousand_strange_methods_and_paths_add_no_series(secured: Secured) -> None:
    def junk(n: int) -> list[tuple[str, str]]:
        return [("X" + secrets.token_hex(8).upper(), "/v1/" + secrets.token_hex(12))
                for _ in range(n)] + \
               [("Q" + secrets.token_hex(8).upper(), "/v1/sessions/" + secrets.token_hex(8)
                 + "/heartbeat") for _ in range(n)]

    for port in (secured.broker.port, secured.broker.admin_port):
        _send_many(secured, port, junk(3))  # the first 'other'/'unmatched' series appear
    _series(secured)
    before = _series(secured)
    for port in (secured.broker.port, secured.broker.admin_port):
        assert _send_many(secured, port, junk(250)) <= {404, 405, 501}
    after = _series(secured)
    assert len(after) == len(before), sorted(set(after) - set(before))[:5]
    assert any('method="other"' in line for line in after)
    assert not any(re.search(r'method="[XQ][0-9A-F]{16}"', line) for line in after)
