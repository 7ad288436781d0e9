#!/usr/bin/env python3
"""CPU of one smart-card login (challenge + signed response) in process, without HTTP or TLS.

Seeds a directory (CRL revocation on, ECDSA P-256 root → issuing → user) in a fresh SQLite file
or PostgreSQL schema, warms the per-process caches, then runs N logins and prints the process
CPU-ms per login and the SQL statements per call (on PostgreSQL also the CPU of the server
processes serving its connections); ``--profile`` adds cProfile's top functions.

    python bench/login_profile.py --logins 300
    python bench/login_profile.py --database-url postgresql+psycopg://postgres@127.0.0.1/test
    python bench/login_profile.py --profile 25
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from sqlalchemy import event  # noqa: E402

from broker.admin.crls import crl_row  # noqa: E402
from broker.admin.trust import trust_row  # noqa: E402
from broker.config import Settings  # noqa: E402
from broker.pki import issue  # noqa: E402
from broker.service import login, registrations  # noqa: E402
from broker.service.context import BrokerContext  # noqa: E402
from broker.store import migrate  # noqa: E402
from broker.store.models import Directory, User, WorkSpace  # noqa: E402

CLIENT = registrations.ClientSpec("windows", "x86_64", "3.1.1")


def seed(ctx: BrokerContext) -> tuple[str, Any, bytes]:
    root = issue.make_root("Profile Root")
    inter = issue.make_intermediate(root, "Profile Issuing")
    alice = issue.make_user_cert(inter, "Alice", upn="alice@corp.example")

    def work(s: Any) -> str:
        s.add(Directory(id="corp", name="Corp", region="us-gov-west-1", sc_pre_session=True,
                        sc_in_session=True, revocation_crl=True, revocation_fail_mode="hard",
                        certmap=["upn"]))
        s.flush()
        for kind, ca in (("anchor", root), ("intermediate", inter)):
            s.add(trust_row("corp", ca.cert, kind))
            s.add(crl_row("corp", issue.make_crl(ca, [])))
        user = User(directory_id="corp", username="alice", upn="alice@corp.example")
        s.add(user)
        s.flush()
        s.add(WorkSpace(id="ws-alice", directory_id="corp", user_id=user.id, protocol="WSP",
                        running_mode="ALWAYS_ON", state="AVAILABLE"))
        return registrations.issue_code(ctx, s, "corp", "bench")

    code = ctx.db.transaction(work)
    return code, alice.key, alice.cert.public_bytes(serialization.Encoding.DER)


def migrated_settings(url: str) -> tuple[str, Settings]:
    """A migrated database for this run (a fresh schema when ``url`` is PostgreSQL) and
    settings for it without rate limits (the run makes hundreds of challenges a minute)."""
    if url.startswith("postgresql"):
        from login_storm import reset_postgres_schema

        url = reset_postgres_schema(url)
    migrate.upgrade(url)
    import tempfile

    # its own state folder (the key sealing the signing keys), never /var/lib/smartcard-broker
    settings = Settings(base_dir=REPO).replace("database", url=url).replace(
        "server", state_dir=tempfile.mkdtemp(prefix="bench-state-"))
    return url, settings.replace("login", challenges_per_code_per_minute=10 ** 9,
                                 challenges_per_address_per_minute=10 ** 9,
                                 challenges_per_directory_per_minute=10 ** 9,
                                 challenges_per_prefix_per_minute=10 ** 9,
                                 connects_per_token_per_minute=10 ** 9,
                                 connects_per_address_per_minute=10 ** 9)


def drop_schema_of(url: str) -> None:
    """Drop the schema :func:`migrated_settings` made (nothing for SQLite)."""
    if url.startswith("postgresql"):
        from compare import drop_schema

        drop_schema(url, url.rsplit("search_path%3D", 1)[-1])


def one_login(ctx: BrokerContext, code: str, key: Any, der_b64: str) -> None:
    ch = login.issue_login_challenge(ctx, code, CLIENT, 1, "127.0.0.1")
    sig = key.sign(base64.b64decode(ch["to_be_signed"]), ec.ECDSA(hashes.SHA256()))
    login.respond_to_challenge(ctx, ch["challenge_id"], der_b64, [],
                               base64.b64encode(sig).decode(), "ecdsa-sha256", "127.0.0.1")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logins", type=int, default=200)
    p.add_argument("--database-url", help="PostgreSQL URL (default: a temporary SQLite file)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="print cProfile's N most expensive functions (cumulative)")
    args = p.parse_args()
    from compare import cpu_seconds  # /proc CPU of the PostgreSQL backends, as compare.py reads it

    with tempfile.TemporaryDirectory(prefix="login-profile-") as tmp:
        url, settings = migrated_settings(args.database_url or f"sqlite:///{tmp}/profile.db")
        ctx = BrokerContext(settings)
        code, key, der = seed(ctx)
        der_b64 = base64.b64encode(der).decode()
        seen: list[str] = []
        event.listen(ctx.db.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
        backends: set[int] = set()  # PostgreSQL: this run's own server processes
        if url.startswith("postgresql"):
            ctx.db.engine.dispose()

            @event.listens_for(ctx.db.engine, "connect")
            def _backend(dbapi_conn: Any, _record: Any) -> None:
                backends.add(dbapi_conn.info.backend_pid)
        for _ in range(5):  # warm: pools, caches, the verdict of this path
            one_login(ctx, code, key, der_b64)
        seen.clear()
        ch = login.issue_login_challenge(ctx, code, CLIENT, 1, "127.0.0.1")
        n_challenge = len(seen)
        sig = key.sign(base64.b64decode(ch["to_be_signed"]), ec.ECDSA(hashes.SHA256()))
        seen.clear()
        login.respond_to_challenge(ctx, ch["challenge_id"], der_b64, [],
                                   base64.b64encode(sig).decode(), "ecdsa-sha256", "127.0.0.1")
        n_response = len(seen)
        prof = cProfile.Profile() if args.profile else None
        server0 = cpu_seconds(list(backends))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if prof:
            prof.enable()
        for _ in range(args.logins):
            one_login(ctx, code, key, der_b64)
        if prof:
            prof.disable()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        server = cpu_seconds(list(backends)) - server0  # backends born meanwhile count from zero
        ctx.db.dispose()
        drop_schema_of(url)
    db = "postgresql" if url.startswith("postgresql") else "sqlite"
    print(f"{db}: {args.logins} logins, {cpu * 1000 / args.logins:.2f} CPU-ms/login "
          f"(client signing included), {wall * 1000 / args.logins:.2f} wall-ms/login; "
          f"SQL statements: challenge {n_challenge}, response {n_response}"
          + (f"; PostgreSQL backends {server * 1000 / args.logins:.2f} CPU-ms/login"
             if backends else ""))
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(args.profile)


if __name__ == "__main__":
    main()
