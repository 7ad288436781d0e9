"""An LDAP directory's server stopped, or accepting TCP and never answering: that directory's
logins answer 503 directory_unavailable with Retry-After, a local directory of the same broker
keeps working, /readyz stays 200 and names the degraded directory, and a metric says so.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.pki import issue
from tests.support.dirfile import directory, value, workspace
from tests.support.ldapserver import SLAPD, start_slapd
from tests.support.require import unavailable
from tests.support.softcard import SoftCard, SoftClient
from tests.support.world import build_world

pytestmark = pytest.mark.slow


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections (the kernel's backlog) and never says a
    word: the slow server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


def _apply_ldap(broker: Any, base: Path, url: str, ca: issue.Issued, name: str,
                secret: Path, svc_dn: str, inter: Any, *, owner: str | None = None) -> str:
    (base / "ca.pem").write_bytes(ca.cert_pem())
    (base / "issuing.pem").write_bytes(inter.cert_pem())
    text = directory(
        name, name, smart_card={"pre_session": True, "in_session": True},
        revocation={"crl": False}, trust_anchors=["issuing.pem"], certmap=["email"],
        workspaces=[workspace(owner, id=f"ws-{name}-{owner}")] if owner else [])
    ldap = {"url": url, "ca_file": "ca.pem", "flavour": "generic", "base_dn":
            "dc=corp,dc=example", "bind_dn": svc_dn, "bind_password_file": str(secret),
            "timeout_s": 1, "cache_ttl_s": 0}
    text = text.replace("registration_codes = 1\n", "registration_codes = 1\n\n[directory.ldap]\n"
                        + "\n".join(f"{k} = {value(v)}" for k, v in ldap.items()) + "\n")
    path = base / f"{name}.toml"
    path.write_text(text)
    out = broker.run_cli("admin", "apply", str(path), "--json")
    return str(json.loads(out.stdout)["directories"][0]["registration_codes"][0])


def test_outages_answer_directory_unavailable(broker: Any, tmp_path: Path,
                                              silent_port: int) -> None:
    if not Path(SLAPD).exists():
        unavailable("ldap", "OpenLDAP's slapd is not installed")
    world = build_world(tmp_path / "world", broker)
    inter = world.pki["issuing"]
    server = start_slapd(tmp_path / "slapd")
    try:
        server.person("gina", mail="gina@corp.example")
        secret = server.write_secret(tmp_path / "ldap.secret")
        got = issue.make_user_cert(inter, "Gina", email="gina@corp.example")
        gina = SoftCard(got.key, got.cert, [inter.cert])
        up = _apply_ldap(broker, tmp_path, server.ldaps_url, server.ca, "stops", secret,
                         server.svc_dn, inter, owner="gina")
        silent = _apply_ldap(broker, tmp_path, f"ldaps://127.0.0.1:{silent_port}", server.ca,
                             "silent", secret, server.svc_dn, inter)
        ok = SoftClient(broker.client(), up).login(gina)
        assert ok.status == 200, ok.body
        server.stop()  # the server goes away while the broker holds pooled connections

        for code, what in ((up, "stopped"), (silent, "silent")):
            started = time.monotonic()
            refused = SoftClient(broker.client(), code).login(gina)
            print(f"{what}: {refused.status} after {time.monotonic() - started:.2f} s")
            assert refused.status == 503, (what, refused.body)
            assert refused.code == "directory_unavailable"
            assert refused.headers.get("retry-after") == "1"
            assert "svc secret" not in json.dumps(refused.body)

        # The local directory of the same broker is unaffected.
        local = SoftClient(broker.client(), world.codes["corp"]).login(world.cards["alice"])
        assert local.status == 200, local.body
        ready = broker.client().get("/readyz")
        assert ready.status == 200
        assert set(ready.body["degraded_directories"]) == {"stops", "silent"}
        metrics = broker.admin().request("GET", "/metrics")
        text = metrics.body if isinstance(metrics.body, str) else str(metrics.body)
        assert 'broker_ldap_directory_up{directory="silent"} 0.0' in text, text[-2000:]
        assert "svc secret" not in broker.logs()
    finally:
        server.stop()
