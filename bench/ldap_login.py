#!/usr/bin/env python3
"""CPU of a smart-card login against an LDAP-backed directory beside a local one, in one run.

In process (like ``login_profile.py``: no HTTP or TLS to the broker), one SQLite database, two
directories with the same PKI and CRL settings: ``local`` (the user in the broker's table) and
``ldap`` (the user in a real OpenLDAP slapd started on loopback, or with ``--samba`` a real Samba
AD DC, mapped by email / UPN over LDAPS). Prints per directory the CPU-ms per cache-warm login,
the ratio ldap/local (the issue's target: ≤ 1.3), and the LDAP searches of the first login of a
user (target: one) and of the warm ones (target: none).

    python bench/ldap_login.py --logins 300
    python bench/ldap_login.py --samba          # needs root and Debian's samba

Numbers compare only within one run on one machine: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from login_profile import migrated_settings, one_login  # noqa: E402

from broker.admin.crls import crl_row  # noqa: E402
from broker.admin.trust import trust_row  # noqa: E402
from broker.pki import issue  # noqa: E402
from broker.service import registrations  # noqa: E402
from broker.service.context import BrokerContext  # noqa: E402
from broker.store.models import Directory, User, WorkSpace  # noqa: E402


def seed(ctx: BrokerContext, server: Any, samba: bool, folder: Path) -> dict[str, Any]:
    root = issue.make_root("Bench Root")
    inter = issue.make_intermediate(root, "Bench Issuing")
    alice = issue.make_user_cert(inter, "Alice", upn="alice@corp.example",
                                 email="alice@corp.example")
    bob = issue.make_user_cert(inter, "Bob", upn="bob@corp.example", email="bob@corp.example")
    if samba:
        server.user("bob", upn="bob@corp.example", mail="bob@corp.example")
    else:
        server.person("bob", mail="bob@corp.example")
    secret = server.write_secret(folder / "ldap.secret")
    ldap = {"ldap_url": server.ldaps_url, "ldap_ca_file": str(server.ca_file),
            "ldap_flavour": "ad" if samba else "generic", "ldap_base_dn": server.base_dn,
            "ldap_bind_dn": server.svc_dn, "ldap_bind_password_file": str(secret)}

    def work(s: Any) -> dict[str, str]:
        codes = {}
        for did, extra in (("local", {}), ("ldap", ldap)):
            s.add(Directory(id=did, name=did, region="us-gov-west-1", sc_pre_session=True,
                            sc_in_session=True, revocation_crl=True,
                            revocation_fail_mode="hard", certmap=["upn" if samba else "email"],
                            **extra))
            s.flush()
            for kind, ca in (("anchor", root), ("intermediate", inter)):
                s.add(trust_row(did, ca.cert, kind))
                s.add(crl_row(did, issue.make_crl(ca, [])))
            name = "alice" if did == "local" else "bob"
            user = User(directory_id=did, username=name,
                        upn="alice@corp.example" if did == "local" else None,
                        email="alice@corp.example" if did == "local" else None)
            s.add(user)
            s.flush()
            s.add(WorkSpace(id=f"ws-{did}", directory_id=did, user_id=user.id, protocol="WSP",
                            running_mode="ALWAYS_ON", state="AVAILABLE"))
            codes[did] = registrations.issue_code(ctx, s, did, "bench")
        return codes

    codes = ctx.db.transaction(work)
    der = {u: base64.b64encode(c.cert.public_bytes(serialization.Encoding.DER)).decode()
           for u, c in (("local", alice), ("ldap", bob))}
    return {"codes": codes, "keys": {"local": alice.key, "ldap": bob.key}, "der": der}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logins", type=int, default=200)
    p.add_argument("--samba", action="store_true", help="a Samba AD DC instead of slapd")
    args = p.parse_args()
    from tests.support.ldapserver import start_samba, start_slapd

    with tempfile.TemporaryDirectory(prefix="ldap-bench-") as tmp:
        folder = Path(tmp)
        server = (start_samba if args.samba else start_slapd)(folder / "server")
        try:
            _url, settings = migrated_settings(f"sqlite:///{tmp}/bench.db")
            ctx = BrokerContext(settings)
            world = seed(ctx, server, args.samba, folder)
            searches0 = ctx.ldap.searches
            one_login(ctx, world["codes"]["ldap"], world["keys"]["ldap"], world["der"]["ldap"])
            first = ctx.ldap.searches - searches0
            for d in ("local", "ldap"):
                for _ in range(5):  # warm: pools, caches
                    one_login(ctx, world["codes"][d], world["keys"][d], world["der"][d])
            result = {}
            searches0 = ctx.ldap.searches
            for _ in range(3):  # alternate, so machine noise falls on both alike
                for d in ("local", "ldap"):
                    cpu0 = time.process_time()
                    for _ in range(args.logins // 3):
                        one_login(ctx, world["codes"][d], world["keys"][d], world["der"][d])
                    result[d] = result.get(d, 0.0) + time.process_time() - cpu0
            warm = ctx.ldap.searches - searches0
            ctx.db.dispose()
        finally:
            server.stop()
    n = args.logins // 3 * 3
    local, ldap = (result[d] * 1000 / n for d in ("local", "ldap"))
    kind = "Samba AD DC" if args.samba else "OpenLDAP slapd"
    print(f"{n} cache-warm logins each ({kind}, SQLite, in process, client signing included):")
    print(f"  local directory: {local:.2f} CPU-ms/login")
    print(f"  LDAP directory:  {ldap:.2f} CPU-ms/login   ratio {ldap / local:.2f} (target <= 1.3)")
    print(f"  LDAP searches: first login of the user {first} (target 1), "
          f"{n} warm logins {warm} (target 0)")


if __name__ == "__main__":
    main()
