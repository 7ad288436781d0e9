#!/usr/bin/env python3
"""CPU of each client call of a smart-card login and its WorkSpace session, in process.

Like ``login_profile.py`` (same directory: CRL revocation on, ECDSA P-256 root → issuing →
user), plus an AUTO_STOP WorkSpace that is stopped before each round. A round is: challenge,
response, connect (AVAILABLE WorkSpace), heartbeat, connect (STOPPED WorkSpace → STARTING with
a logon challenge), logon (the clock is moved past the start delay), end of the session. Each
call is timed with ``time.process_time`` (the client's signing is not); it prints the mean
CPU-ms and the SQL statements of each call.

    python bench/session_profile.py --rounds 300 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from login_profile import CLIENT, drop_schema_of, migrated_settings, seed  # noqa: E402
from sqlalchemy import event, select, update  # noqa: E402

from broker.service import auth, login, sessions  # noqa: E402
from broker.service.context import BrokerContext  # noqa: E402
from broker.store.models import User, WorkSpace  # noqa: E402

START_DELAY_S = 0.05


class Round:
    """One round of calls, each timed and its statements counted."""

    def __init__(self, ctx: BrokerContext) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.statements: dict[str, int] = {}
        self.seen: list[str] = []
        event.listen(ctx.db.engine, "before_cursor_execute",
                     lambda *a: self.seen.append(a[2]))

    def call(self, name: str, fn: Callable[[], Any]) -> Any:
        self.seen.clear()
        cpu0 = time.process_time()
        out = fn()
        self.cpu[name] += time.process_time() - cpu0
        self.statements[name] = len(self.seen)
        return out


def one_round(ctx: BrokerContext, timed: Round, skew: list[timedelta], code: str, key: Any,
              der_b64: str) -> None:
    def sign(tbs_b64: str) -> str:
        return base64.b64encode(key.sign(base64.b64decode(tbs_b64),
                                         ec.ECDSA(hashes.SHA256()))).decode()

    ch = timed.call("challenge", lambda: login.issue_login_challenge(ctx, code, CLIENT, 1,
                                                                     "127.0.0.1"))
    sig = sign(ch["to_be_signed"])
    token = timed.call("response", lambda: login.respond_to_challenge(
        ctx, ch["challenge_id"], der_b64, [], sig, "ecdsa-sha256", "127.0.0.1"))["auth_token"]
    principal = timed.call("bearer", lambda: auth.client_principal(ctx, token))
    started = timed.call("connect", lambda: sessions.connect(ctx, principal, "ws-alice",
                                                             "127.0.0.1"))
    body = started.body  # a card login: the PIN again
    assert isinstance(started, sessions.Starting) and body["state"] == "AVAILABLE", body
    first = body["logon_challenge"]
    sig = sign(first["to_be_signed"])
    body = timed.call("logon_available", lambda: sessions.logon(
        ctx, principal, "ws-alice", first["challenge_id"], sig, "ecdsa-sha256", "127.0.0.1"))
    timed.call("heartbeat", lambda: sessions.heartbeat(ctx, principal, body["session"]["id"],
                                                       True))
    ctx.db.transaction(lambda s: s.execute(update(WorkSpace).where(WorkSpace.id == "ws-auto")
                                           .values(state="STOPPED", transition_due_at=None)))
    started = timed.call("connect_start", lambda: sessions.connect(
        ctx, principal, "ws-auto", "127.0.0.1"))
    body = started.body
    assert isinstance(started, sessions.Starting), started
    skew[0] += timedelta(seconds=START_DELAY_S * 2)
    logon = body["logon_challenge"]
    sig = sign(logon["to_be_signed"])
    opened = timed.call("logon", lambda: sessions.logon(
        ctx, principal, "ws-auto", logon["challenge_id"], sig, "ecdsa-sha256", "127.0.0.1"))
    timed.call("end_session", lambda: sessions.end_session(ctx, principal,
                                                           opened["session"]["id"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--database-url", help="PostgreSQL URL (default: a temporary SQLite file)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="session-profile-") as tmp:
        url, settings = migrated_settings(args.database_url or f"sqlite:///{tmp}/profile.db")
        settings = settings.replace("workspaces", start_delay_s=START_DELAY_S)
        skew = [timedelta()]
        ctx = BrokerContext(settings, clock=lambda: datetime.now(UTC) + skew[0])
        code, key, der = seed(ctx)

        def auto_stop_workspace(s: Any) -> None:
            alice = s.scalar(select(User).where(User.username == "alice"))
            s.add(WorkSpace(id="ws-auto", directory_id="corp", user_id=alice.id,
                            protocol="WSP", running_mode="AUTO_STOP", state="STOPPED"))

        ctx.db.transaction(auto_stop_workspace)
        der_b64 = base64.b64encode(der).decode()
        warm = Round(ctx)
        for _ in range(5):  # warm: pools, caches, the signing key
            one_round(ctx, warm, skew, code, key, der_b64)
        timed = Round(ctx)
        for _ in range(args.rounds):
            one_round(ctx, timed, skew, code, key, der_b64)
        ctx.db.dispose()
        drop_schema_of(url)
    db = "postgresql" if url.startswith("postgresql") else "sqlite"
    print(f"{db}, {args.rounds} rounds: CPU-ms per call (SQL statements)")
    for name, cpu in timed.cpu.items():
        print(f"  {name:14} {cpu * 1000 / args.rounds:6.2f}  ({timed.statements[name]})")


if __name__ == "__main__":
    main()
