#!/usr/bin/env python3
"""Round trips to PostgreSQL of one warm smart-card login, counted where libpq sends them.

SQLAlchemy's statement events do not see psycopg's implicit BEGIN, its COMMIT or a prepare,
so this runs psycopg's ctypes implementation of libpq (``PSYCOPG_IMPL=python``, set here) and
counts every query it sends (``send_query*``, ``send_prepare``, ``exec*``, ``prepare``), each
one round trip in psycopg's non-pipeline mode. Seeds a directory like ``login_profile.py``,
warms (psycopg prepares a statement on its fifth run), then prints each call's round trips
and their SQL (first words)::

    python bench/login_round_trips.py --database-url postgresql+psycopg://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ["PSYCOPG_IMPL"] = "python"
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from login_profile import CLIENT, drop_schema_of, migrated_settings, seed  # noqa: E402
from psycopg.pq import pq_ctypes  # noqa: E402

from broker.service import login  # noqa: E402
from broker.service.context import BrokerContext  # noqa: E402

SENDERS = ("send_query", "send_query_params", "send_prepare", "send_query_prepared", "exec_",
           "exec_params", "exec_prepared", "prepare")
sent: list[str] = []
prepared: dict[str, str] = {}  # prepared statement name: its SQL


def _counting(name: str) -> Any:
    original = getattr(pq_ctypes.PGconn, name)

    def send(self: Any, *args: Any, **kwargs: Any) -> Any:
        first = args[0] if args else b""
        text = first.decode(errors="replace") if isinstance(first, bytes) else str(first)
        if name in ("send_prepare", "prepare"):
            prepared[text] = args[1].decode(errors="replace") if len(args) > 1 else ""
            text = f"PREPARE {text}: {prepared[text]}"
        elif name in ("send_query_prepared", "exec_prepared"):
            text = f"EXECUTE {text}: {prepared.get(text, '?')}"
        sent.append(" ".join(text.split())[:110])
        return original(self, *args, **kwargs)

    return send


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", required=True, help="PostgreSQL URL")
    p.add_argument("--warm", type=int, default=8, help="logins before the counted one")
    args = p.parse_args()
    for name in SENDERS:
        setattr(pq_ctypes.PGconn, name, _counting(name))
    with tempfile.TemporaryDirectory(prefix="login-round-trips-"):
        url, settings = migrated_settings(args.database_url)
        ctx = BrokerContext(settings)
        try:
            code, key, der = seed(ctx)
            der_b64 = base64.b64encode(der).decode()
            counts: dict[str, list[str]] = {}
            for _ in range(args.warm + 1):
                sent.clear()
                ch = login.issue_login_challenge(ctx, code, CLIENT, 1, "127.0.0.1")
                counts["challenge"] = list(sent)
                sig = key.sign(base64.b64decode(ch["to_be_signed"]), ec.ECDSA(hashes.SHA256()))
                sent.clear()
                login.respond_to_challenge(ctx, ch["challenge_id"], der_b64, [],
                                           base64.b64encode(sig).decode(), "ecdsa-sha256",
                                           "127.0.0.1")
                counts["response"] = list(sent)
        finally:
            ctx.db.dispose()
            drop_schema_of(url)
    for call, queries in counts.items():
        print(f"{call}: {len(queries)} round trips")
        for q in queries:
            print(f"    {q}")
    print(f"login: {sum(len(q) for q in counts.values())} round trips")


if __name__ == "__main__":
    main()
