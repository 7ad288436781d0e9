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


def write_profiles(home: Path) -> tuple[Path, Path]:
    """A profiles.ini as Firefox writes it: one relative profile, one absolute, one missing."""
    root = home / ".mozilla" / "firefox"
    relative = root / "abcd1234.default-release"
    absolute = home / "elsewhere" / "work.profile"
    relative.mkdir(parents=True)
    absolute.mkdir(parents=True)
    (root / "profiles.ini").write_text(
        "[Install4F96D1932A9F858E]\nDefault=abcd1234.default-release\nLocked=1\n\n"
        "[Profile1]\nName=work\nIsRelative=0\nPath=" + str(absolute) + "\n\n"
        "[Profile0]\nName=default-release\nIsRelative=1\nPath=abcd1234.default-release\n"
        "Default=1\n\n[Profile2]\nName=gone\nIsRelative=1\nPath=gone.profile\n\n"
        "[General]\nStartWithLastProfile=1\nVersion=2\n")
    return relative, absolute


def test_firefox_profiles_are_found_from_profiles_ini(tmp_path: Path) -> None:
    relative, absolute = write_profiles(tmp_path)
    assert nss.firefox_profiles(tmp_path) == [absolute, relative]
    assert nss.firefox_profiles(tmp_path / "nobody") == []


def test_a_database_held_open_is_named_with_its_process(tmp_path: Path) -> None:
    import sys

    db = tmp_path / "nssdb"
    db.mkdir()
    (db / "cert9.db").write_bytes(b"")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               f"f = open({str(db / 'cert9.db')!r}, 'rb')\n"
                               "print('open', flush=True)\ntime.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        assert [pid for pid, _ in nss.holders(db)] == [holder.pid]
        with pytest.raises(nss.NssSetupError) as err:
            nss.refuse_if_in_use(db)
        assert err.value.code == "nss_database_in_use" and str(holder.pid) in err.value.message
    finally:
        holder.kill()
        holder.wait()
    assert nss.holders(db) == []
    nss.refuse_if_in_use(db)  # closed: nothing to refuse


@needs_nss
def test_cli_refuses_a_database_in_use_unless_forced_and_registers_firefox_profiles(
        tmp_path: Path, module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    relative, absolute = write_profiles(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    db = tmp_path / ".pki" / "nssdb"
    nss.ensure_database(relative)
    holder = subprocess.Popen([sys.executable, "-c", "import time\n"
                               f"f = open({str(relative / 'cert9.db')!r}, 'rb')\n"
                               "print('open', flush=True)\ntime.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        refused = CliRunner().invoke(main, ["nss-setup", "--module", module, "--firefox"])
        assert refused.exit_code == 1
        assert "nss_database_in_use" in refused.output and "--force" in refused.output
        assert not db.exists(), "nothing is changed when one database is refused"
        forced = CliRunner().invoke(main, ["nss-setup", "--module", module, "--firefox",
                                           "--force"])
    finally:
        holder.kill()
        holder.wait()
    assert forced.exit_code == 0, forced.output
    assert forced.output.count('Module "OpenSC" added to database.\n') == 3
    for each in (db, relative, absolute):
        assert nss.registered_modules(each).count("OpenSC") == 1
