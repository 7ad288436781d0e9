#!/usr/bin/env python3
"""CPU per request of the client API's dispatch: Klein's resource beside the direct dispatch.

Builds the real client API (every route, the access log and metrics as served) and renders
``GET /healthz`` (a JSON route with no database call and no thread hop, so what is measured is
request handling, routing, the route wrapper and the JSON answer) many times through each
resource on an in-memory channel, alternating rounds; prints CPU-µs per request, medians of the
rounds, and the ratio. No TLS, no sockets: the part of a request that dispatch changes.

    python bench/dispatch_cost.py --requests 20000 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from twisted.web.test.requesthelper import DummyChannel  # noqa: E402

from broker.config import load_settings  # noqa: E402
from broker.service.context import BrokerContext  # noqa: E402
from broker.web import server  # noqa: E402
from broker.web.http import JsonRequest  # noqa: E402


def render_many(resource: Any, n: int, path: bytes = b"/healthz") -> float:
    """CPU seconds per request over ``n`` requests."""
    started = time.process_time()
    for _ in range(n):
        channel = DummyChannel()
        request = JsonRequest(channel)
        request.method, request.path, request.uri = b"GET", path, path
        request.prepath, request.postpath = [], path.split(b"/")[1:]
        request.gotLength(0)
        resource.render(request)
        if not request.finished:
            raise SystemExit("dispatch_cost: the request did not finish")
    return (time.process_time() - started) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="dispatch-") as tmp:
        ctx = BrokerContext(load_settings(None).replace(
            "database", url=f"sqlite:///{Path(tmp) / 'b.db'}"))
        api = server.build_apis(ctx)[0]
        resources = {"klein": api.app.resource(), "direct": api.resource()}
        for resource in resources.values():
            render_many(resource, 500)  # warm
        times: dict[str, list[float]] = {name: [] for name in resources}
        for _ in range(args.rounds):
            for name, resource in resources.items():
                times[name].append(render_many(resource, args.requests))
    med = {name: statistics.median(t) * 1e6 for name, t in times.items()}
    for name, t in times.items():
        print(f"{name:>7}: {med[name]:.1f} CPU-µs per request (rounds "
              f"{min(t) * 1e6:.1f}–{max(t) * 1e6:.1f})")
    print(f"direct ÷ klein: {med['direct'] / med['klein']:.2f}; saved per login (2 requests): "
          f"{(med['klein'] - med['direct']) * 2 / 1000:.3f} CPU-ms")


if __name__ == "__main__":
    main()
