"""`broker doctor`: one line per check, --json, exit 0 ok / 1 a check failed / 2 unusable input."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from tests.support.server import BrokerProcess


def with_tls(bp: BrokerProcess, days: int = 365) -> None:
    from broker.pki import issue

    now = datetime.now(UTC)
    root = issue.make_root("Doctor TLS CA")
    leaf = issue.make_intermediate(root, "broker.example", not_before=now - timedelta(days=1),
                                   not_after=now + timedelta(days=days))
    (bp.base / "tls.pem").write_bytes(leaf.cert_pem())
    (bp.base / "tls.key").write_bytes(leaf.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    bp.config_path.write_text(bp.config_path.read_text().replace(
        "[server]\n", f'[server]\ntls_cert = "{bp.base / "tls.pem"}"\n'
                      f'tls_key = "{bp.base / "tls.key"}"\n'))


def test_healthy_installation_passes_every_check(broker, world) -> None:  # type: ignore[no-untyped-def]
    with_tls(broker)
    out = broker.run_cli("doctor", check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert all(line.split()[0] in ("OK", "WARN", "SKIP") for line in lines), out.stdout
    names = {line.split()[1] for line in lines}
    assert {"config", "catalogue", "database", "migrations", "tls", "ca", "crl",
            "clock", "listen"} <= names
    # the running broker holds its own ports: that is not a failure
    assert any("served by a running broker" in line for line in lines), out.stdout
    assert any(line.split()[1:3] == ["ca", "corp"] for line in lines)
    doc = json.loads(broker.run_cli("doctor", "--json").stdout)
    assert doc["ok"] is True and {c["name"] for c in doc["checks"]} == names


def test_expiring_tls_and_unreachable_ocsp_fail(broker_factory, migrated_url: str,
                                                tmp_path: Path) -> None:
    from broker.pki import issue

    bp = broker_factory(migrated_url, start=False)
    with_tls(bp, days=-1)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    root = issue.make_root("OCSP Root")
    inter = issue.make_intermediate(root, "OCSP Issuing", ocsp_url=f"http://127.0.0.1:{dead}/")
    (tmp_path / "root.pem").write_bytes(root.cert_pem())
    (tmp_path / "issuing.pem").write_bytes(inter.cert_pem())
    (tmp_path / "d.toml").write_text(
        '[[directory]]\nid = "ocspd"\nname = "O"\nregion = "us-gov-west-1"\n'
        'revocation = { crl = false, ocsp = true }\n'
        'trust_anchors = ["root.pem"]\nintermediates = ["issuing.pem"]\n')
    bp.run_cli("admin", "apply", str(tmp_path / "d.toml"))
    out = bp.run_cli("doctor", "--json", check=False)
    assert out.returncode == 1
    checks = {(c["name"], c["subject"]): c for c in json.loads(out.stdout)["checks"]}
    assert checks[("tls", "")]["status"] == "fail" and "expired" in checks[("tls", "")]["detail"]
    assert checks[("ocsp", "ocspd")]["status"] == "fail"


def test_missing_database_fails_without_creating_it(broker_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "never.db"
    bp = broker_factory(f"sqlite:///{db}", start=False)
    out = bp.run_cli("doctor", check=False)
    assert out.returncode == 1
    assert any(line.startswith("FAIL") and "database" in line
               for line in out.stdout.splitlines())
    assert not db.exists()


def test_unusable_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "broker.toml"
    bad.write_text("[server\n")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "broker.cli", "doctor", "--config", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("error: ")
    assert "Traceback" not in out.stderr


def test_doctor_fails_what_serve_refuses(broker_factory, migrated_url: str) -> None:  # type: ignore[no-untyped-def]
    """A key that does not match the certificate, and a listen port another program holds:
    doctor fails both checks, and serve refuses to start for the same reasons."""
    from broker.web.server import dev_certificate

    bp = broker_factory(migrated_url, start=False)
    with_tls(bp)
    other = dev_certificate(bp.base / "other")
    good_key = (bp.base / "tls.key").read_bytes()
    (bp.base / "tls.key").write_bytes(other.key.read_bytes())
    out = bp.run_cli("doctor", "--json", check=False)
    assert out.returncode == 1
    checks = {(c["name"], c["subject"]): c for c in json.loads(out.stdout)["checks"]}
    assert checks[("tls", "")]["status"] == "fail"
    assert "do not match" in checks[("tls", "")]["detail"]
    serve = bp.run_cli("serve", check=False)
    assert serve.returncode == 1 and "do not match" in serve.stderr

    (bp.base / "tls.key").write_bytes(good_key)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", bp.port))
        taken.listen()
        out = bp.run_cli("doctor", "--json", check=False)
        serve = bp.run_cli("serve", check=False)
    checks = {(c["name"], c["subject"]): c for c in json.loads(out.stdout)["checks"]}
    assert out.returncode == 1
    assert checks[("listen", "listen")]["status"] == "fail"
    assert "address already in use" in checks[("listen", "listen")]["detail"]
    assert checks[("listen", "admin_listen")]["status"] == "ok"
    assert serve.returncode == 2 and "address already in use" in serve.stderr


def test_hard_fail_directory_without_a_revocation_source_is_named_everywhere(
        broker_factory, migrated_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An intermediate with no CRL from its issuer, no distribution point and no OCSP: apply
    warns, doctor fails the revocation check, the trust listing says why; uploading the
    root's CRL clears all three."""
    from cryptography.hazmat.primitives import serialization as ser

    from broker.pki import issue

    bp = broker_factory(migrated_url, start=False)
    with_tls(bp)
    root = issue.make_root("Gap Root")
    inter = issue.make_intermediate(root, "Gap Issuing")
    (tmp_path / "root.pem").write_bytes(root.cert_pem())
    (tmp_path / "issuing.pem").write_bytes(inter.cert_pem())
    (tmp_path / "root.crl.pem").write_bytes(issue.make_crl(root, []).public_bytes(
        ser.Encoding.PEM))
    (tmp_path / "d.toml").write_text(
        '[[directory]]\nid = "gap"\nname = "G"\nregion = "us-gov-west-1"\n'
        'smart_card = { pre_session = true }\n'
        'revocation = { crl = true, ocsp = false, fail_mode = "hard" }\n'
        'trust_anchors = ["root.pem"]\nintermediates = ["issuing.pem"]\n')
    out = bp.run_cli("admin", "apply", str(tmp_path / "d.toml"))
    assert "revocation_coverage_gap" in out.stderr and "Gap Issuing" in out.stderr, out.stderr
    doc = json.loads(bp.run_cli("doctor", "--json", check=False).stdout)
    gap = [c for c in doc["checks"] if c["name"] == "revocation"]
    assert [c["status"] for c in gap] == ["fail"] and "Gap Issuing" in gap[0]["detail"]
    listed = json.loads(bp.run_cli("admin", "trust", "list", "gap", "--json").stdout)["items"]
    assert any("no revocation source" in w for t in listed for w in t["warnings"])

    (tmp_path / "d.toml").write_text((tmp_path / "d.toml").read_text()
                                     + 'crls = ["root.crl.pem"]\n')
    out = bp.run_cli("admin", "apply", str(tmp_path / "d.toml"))
    assert "revocation_coverage_gap" not in out.stderr
    doc = json.loads(bp.run_cli("doctor", "--json", check=False).stdout)
    assert [c["status"] for c in doc["checks"] if c["name"] == "revocation"] == ["ok"]
