from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.client import nss
from broker.client.cli import main
from broker.client.errors import CardError
from tests.support.require import unavailable


@pytest.fixture
def nss_tools() -> None:
    if shutil.which("modutil") is None:
        unavailable("nss", "NSS tools not installed (apt-get install libnss3-tools)")


needs_nss = pytest.mark.usefixtures("nss_tools")


@pytest.fixture
def module(tmp_path: Path) -> str:
    try:
        return nss.find_opensc_module()
    except CardError:
        unavailable("opensc", "OpenSC not installed")


def modutil_list(db: Path) -> str:
    return subprocess.run(["modutil", "-dbdir", f"sql:{db}", "-list"], capture_output=True,
                          text=True, check=True).stdout


@needs_nss
def test_creates_the_database_and_registers_opensc_like_modutil_add(
        tmp_path: Path, module: str) -> None:
    db = tmp_path / "nssdb"
    result = nss.register_opensc(db, module)
    assert result.added
    assert (db / "cert9.db").exists()
    listing = modutil_list(db)
    assert "OpenSC" in listing and f"library name: {module}" in listing


@needs_nss
def test_a_second_run_says_already_registered_and_changes_nothing(
        tmp_path: Path, module: str) -> None:
    db = tmp_path / "nssdb"
    nss.register_opensc(db, module)
    again = nss.register_opensc(db, module)
    assert not again.added and "already registered" in str(again)
    assert nss.registered_modules(db).count("OpenSC") == 1


@needs_nss
def test_cli_nss_setup_with_firefox_policy(tmp_path: Path, module: str) -> None:
    policy = tmp_path / "distribution" / "policies.json"
    policy.parent.mkdir()
    policy.write_text(json.dumps({"policies": {"DisableTelemetry": True,
                                               "SecurityDevices": {"Add": {"Other": "/x.so"}}}}))
    args = ["nss-setup", "--dbdir", str(tmp_path / "db"), "--module", module,
            "--firefox-policy", str(policy)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "added" in first.output
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0 and "already registered" in second.output
    assert json.loads(policy.read_text()) == {"policies": {
        "DisableTelemetry": True,
        "SecurityDevices": {"Add": {"Other": "/x.so", "OpenSC": module}}}}


def test_policy_is_created_when_absent(tmp_path: Path) -> None:
    path = tmp_path / "policies.json"
    nss.write_firefox_policy(path, "/usr/lib/opensc-pkcs11.so")
    assert json.loads(path.read_text()) == {
        "policies": {"SecurityDevices": {"Add": {"OpenSC": "/usr/lib/opensc-pkcs11.so"}}}}


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"policies": []}'])
def test_an_unusable_policy_file_is_refused_and_left_alone(tmp_path: Path, content: str) -> None:
    path = tmp_path / "policies.json"
    path.write_text(content)
    with pytest.raises(CardError) as info:
        nss.write_firefox_policy(path, "/x.so")
    assert info.value.code == "policy_invalid" and path.read_text() == content


def test_missing_module_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CardError) as info:
        nss.find_opensc_module((str(tmp_path / "nope.so"),))
    assert info.value.code == "opensc_missing"
    out = CliRunner().invoke(main, ["nss-setup", "--dbdir", str(tmp_path / "db"), "--module",
                                    str(tmp_path / "nope.so")])
    assert out.exit_code == 1 and out.output.startswith("error: ")
