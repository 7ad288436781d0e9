"""`broker pki verify`: exit 0 valid, 1 invalid with the reason, 2 unreadable input or usage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.pki import issue
from broker.pki.cli import pki


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    p = issue.make_demo_pki()
    out = {"root": p.root.cert_pem(), "inter": p.intermediate.cert_pem(),
           "leaf": p.user.cert_pem(),
           "crl": issue.make_crl(p.intermediate, [p.user.cert.serial_number]).public_bytes(
               serialization.Encoding.PEM),
           "bundle": p.user.cert_pem() + p.intermediate.cert_pem(),
           "junk": b"-----BEGIN CERTIFICATE-----\nnot base64!!\n-----END CERTIFICATE-----\n"}
    paths = {}
    for name, data in out.items():
        paths[name] = d / f"{name}.pem"
        paths[name].write_bytes(data)
    return paths


def run(*args: object) -> tuple[int, str]:
    r = CliRunner().invoke(pki, ["verify", *map(str, args)])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.output


def test_valid_chain_exits_0_with_json_identity(files) -> None:  # type: ignore[no-untyped-def]
    code, out = run(files["leaf"], "--trust", files["root"], "--untrusted", files["inter"],
                    "--json")
    data = json.loads(out)
    assert code == 0 and data["valid"] and data["identity"]["upn"] == "demo.user@corp.example"
    assert len(data["chain"]) == 3


def test_bundle_in_the_leaf_file_supplies_intermediates(files) -> None:  # type: ignore[no-untyped-def]
    assert run(files["bundle"], "--trust", files["root"])[0] == 0


@pytest.mark.parametrize("extra,reason", [
    ((), "certificate_untrusted"),
    (("--crl", "crl"), "certificate_revoked"),
    (("--at", "2099-01-01T00:00:00Z"), "certificate_expired"),
    (("--max-depth", "0"), "chain_too_long"),
])
def test_invalid_exits_1_with_reason(files, extra, reason) -> None:  # type: ignore[no-untyped-def]
    args = [files[a] if a in files else a for a in extra]
    untrusted = [] if not extra else ["--untrusted", files["inter"]]
    code, out = run(files["leaf"], "--trust", files["root"], *untrusted, *args, "--json")
    assert code == 1 and json.loads(out)["reason"] == reason


@pytest.mark.parametrize("args", [
    ("{missing}", "--trust", "{root}"),
    ("{junk}", "--trust", "{root}"),
    ("{leaf}", "--trust", "{junk}"),
    ("{leaf}", "--trust", "{root}", "--at", "yesterday"),
    ("{leaf}",),
    ("{leaf}", "--trust", "{root}", "--purpose", "server"),
])
def test_unreadable_input_or_usage_exits_2(files, args) -> None:  # type: ignore[no-untyped-def]
    names = {k: str(v) for k, v in files.items()} | {"missing": "/nonexistent.pem"}
    code, _ = run(*[a.format(**names) for a in args])
    assert code == 2


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=2000))
def test_random_files_never_traceback(files, data: bytes) -> None:  # type: ignore[no-untyped-def]
    target = files["root"].parent / "random.bin"
    target.write_bytes(data)
    assert run(target, "--trust", files["root"])[0] in (1, 2)


def test_broker_pki_verify_is_the_installed_command(files) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.run([sys.executable, "-m", "broker.cli", "pki", "verify",
                           str(files["leaf"]), "--trust", str(files["root"]), "--untrusted",
                           str(files["inter"])], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("valid:")


def test_max_depth_255_is_accepted(files) -> None:  # type: ignore[no-untyped-def]
    code, _ = run(files["leaf"], "--trust", files["root"], "--untrusted", files["inter"],
                  "--max-depth", "255")
    assert code == 0
    assert run(files["leaf"], "--trust", files["root"], "--max-depth", "256")[0] == 2


def test_max_depth_counts_intermediates_only(files) -> None:  # type: ignore[no-untyped-def]
    args = (files["leaf"], "--trust", files["root"], "--untrusted", files["inter"], "--json")
    assert run(*args, "--max-depth", "1")[0] == 0
    code, out = run(*args, "--max-depth", "0")
    assert code == 1 and json.loads(out)["details"]["intermediates"] == 1


def test_soft_fail_is_said_in_words(files, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A CRL for the issuing CA only: the issuing CA's own status (the root's CRL) is unknown.
    p = issue.make_demo_pki()
    good = tmp_path / "good.crl"
    good.write_bytes(issue.make_crl(p.intermediate, []).public_bytes(serialization.Encoding.PEM))
    (tmp_path / "l.pem").write_bytes(p.user.cert_pem())
    (tmp_path / "r.pem").write_bytes(p.root.cert_pem())
    (tmp_path / "i.pem").write_bytes(p.intermediate.cert_pem())
    base = (tmp_path / "l.pem", "--trust", tmp_path / "r.pem", "--untrusted", tmp_path / "i.pem",
            "--crl", good)
    code, out = run(*base)
    assert code == 0 and "revocation status NOT established" in out
    code, out = run(*base, "--json")
    assert json.loads(out)["revocation"] == "soft_fail"


def test_well_formed_but_unparseable_certificate_exits_1(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from asn1crypto.core import Integer, Sequence

    # SEQUENCE { INTEGER, INTEGER, INTEGER }: the SIGNED{} shape, but no certificate inside.
    class Three(Sequence):  # type: ignore[misc]
        _fields = [("a", Integer), ("b", Integer), ("c", Integer)]

    (tmp_path / "odd.der").write_bytes(Three({"a": 1, "b": 2, "c": 3}).dump())
    root = issue.make_root("R")
    (tmp_path / "root.pem").write_bytes(root.cert_pem())
    code, out = run(tmp_path / "odd.der", "--trust", tmp_path / "root.pem", "--json")
    assert code == 1 and json.loads(out)["reason"] == "certificate_malformed"


def _deep_chain(tmp_path, intermediates: int):  # type: ignore[no-untyped-def]
    root = issue.make_root("Deep Root")
    cas = [root]
    for i in range(intermediates):
        cas.append(issue.make_intermediate(cas[-1], f"Deep CA {i}", path_length=None))
    (tmp_path / "deep-root.pem").write_bytes(root.cert_pem())
    (tmp_path / "deep-cas.pem").write_bytes(b"".join(c.cert_pem() for c in cas[1:]))
    (tmp_path / "deep-leaf.pem").write_bytes(issue.make_user_cert(cas[-1], "Deep").cert_pem())
    return (tmp_path / "deep-leaf.pem", "--trust", tmp_path / "deep-root.pem", "--untrusted",
            tmp_path / "deep-cas.pem", "--json")


def test_max_depth_255_validates_a_path_deeper_than_openssl_goes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """120 intermediate CAs: past OpenSSL's fixed verify depth of 100 and past the 10 chain
    certificates a card may send, but within --max-depth 255: valid. One fewer allowed than
    there are: refused as chain_too_long (exit 1). Never exit 2 on this well-formed input."""
    args = _deep_chain(tmp_path, 120)
    code, out = run(*args, "--max-depth", "255")
    assert code == 0, out
    assert len(json.loads(out)["chain"]) == 122
    code, out = run(*args, "--max-depth", "119")
    assert code == 1 and json.loads(out)["reason"] == "chain_too_long", out
