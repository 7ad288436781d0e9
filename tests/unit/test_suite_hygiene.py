"""Rules the test suite and the benches keep about themselves.

- Network traffic only to loopback: no IP literal outside 127.0.0.0/8 and ::1 in tests/ or
  bench/, except the few below that are data (never an address anything connects to).
- Every skip goes through tests/support/require.py's ``unavailable()``, whose component list is
  the one README.md and .ci/run use.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from pathlib import Path

import pytest

from tests.support import require

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("tests", "bench")
TEXT_SUFFIXES = {".py", ".json", ".csv", ".toml", ".txt", ".cfg", ".conf", ".md", ".sh", ".hex",
                 ".pem", ".yaml", ".yml", ""}

IPV4 = re.compile(r"(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(?![\w.]|\.\d)")
# Two to seven colons with at least one hex digit somewhere: "::1", "fe80::1", "2001:db8::7".
IPV6 = re.compile(r"(?<![\w:.])((?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4})(?![\w:])")

# Literals that look like addresses but are data; each with the reason it is allowed.
ALLOWED: dict[str, dict[str, str]] = {
    "tests/integration/test_session_calls.py": {
        "192.0.2.7": "RFC 5737 TEST-NET-1: the client address recorded with a challenge"},
    "tests/integration/test_login_profile.py": {
        "10.0.0.0": "an iPAddress name constraint inside a test certificate"},
    "tests/unit/pki/test_profile.py": {
        "10.0.0.0": "an iPAddress name constraint inside a test certificate",
        "192.168.0.0": "comment spelling out the DER of a malformed name constraint",
        "255.0.255.0": "comment spelling out the DER of a malformed name constraint (a mask)"},
    "tests/support/nonconforming.py": {
        "192.168.0.0": "comment spelling out the DER of a malformed name constraint",
        "255.0.255.0": "comment spelling out the DER of a malformed name constraint (a mask)"},
    "tests/unit/test_policy.py": {
        "3.1.1.123": "a client version string (four components)"},
}
# PKITS test numbers ("4.8.1.1") look like IPv4 addresses in the PKITS bench and its data.
PKITS_NUMBER = re.compile(r"4\.\d{1,2}\.\d{1,2}\.\d{1,2}")
PKITS_FILES = ("bench/pkits_agreement.py", "bench/pkits_golden.csv",
               "tests/unit/pki/test_pkits.py")


def scanned_files() -> list[Path]:
    return sorted(p for top in SCANNED for p in (ROOT / top).rglob("*")
                  if p.is_file() and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts)


def foreign_addresses(rel: str, text: str) -> list[str]:
    """IP literals in ``text`` outside loopback that the allow-list does not name."""
    found: list[str] = []
    # "§4.2.1.10" is a section of an RFC, not an address.
    ipv4 = [m.group(0) for m in IPV4.finditer(text) if text[max(m.start() - 1, 0)] != "§"]
    for literal in ipv4 + IPV6.findall(text):
        if not any(c in "0123456789abcdefABCDEF" for c in literal.replace(":", "")):
            continue  # "::" in a slice such as [::-1]
        try:
            address = ipaddress.ip_address(literal)
        except ValueError:
            continue  # not an address ("1.2.3.456", "a:b:c")
        if address.is_loopback:
            continue
        if literal in ALLOWED.get(rel, {}):
            continue
        if rel in PKITS_FILES and PKITS_NUMBER.fullmatch(literal):
            continue
        found.append(literal)
    return found


def test_no_address_outside_loopback_in_tests_or_benches() -> None:
    offenders = {}
    for path in scanned_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel == "tests/unit/test_suite_hygiene.py":
            continue  # this file names addresses to test the scanner
        bad = foreign_addresses(rel, path.read_text(errors="replace"))
        if bad:
            offenders[rel] = sorted(set(bad))
    assert offenders == {}, ("tests and benches talk to loopback only (127.0.0.0/8, ::1); "
                             "use a loopback listener, or allow-list data in ALLOWED")


@pytest.mark.parametrize("text,expected", [
    ('connect(("10.255.255.1", 9))', ["10.255.255.1"]),
    ("--broker 10.255.255.1:9", ["10.255.255.1"]),
    ('"https://[2001:db8::7]:443"', ["2001:db8::7"]),
    ("bind 0.0.0.0:80", ["0.0.0.0"]),
    ("fe80::1%eth0", ["fe80::1"]),
    ("127.0.0.1:8443 127.1.2.3 [::1]:9", []),
    ("SECTIONS[::-1] 12:30:45 std::vector 1.2.3.456 v1.2.3.4.5", []),
    ("RFC 5280 §4.2.1.10 (10.0.0.1)", ["10.0.0.1"]),
])
def test_the_address_scanner_finds_what_it_should(text: str, expected: list[str]) -> None:
    assert foreign_addresses("tests/x.py", text) == expected


def test_allowed_literals_are_still_there() -> None:
    """An allow-list entry whose literal left its file is dead weight: remove it."""
    for rel, literals in ALLOWED.items():
        text = (ROOT / rel).read_text()
        assert all(literal in text for literal in literals), rel


# ------------------------------------------------------------------------------------- skips

BARE_SKIP = re.compile(r"pytest\.skip\(|pytest\.mark\.skip|pytest\.importorskip\(|"
                       r"skipif\(|unittest\.skip")


def test_every_skip_goes_through_require_unavailable() -> None:
    bare = [f"{p.relative_to(ROOT)}:{n}"
            for p in sorted((ROOT / "tests").rglob("*.py"))
            if p.name not in ("require.py", "test_suite_hygiene.py")
            for n, line in enumerate(p.read_text().splitlines(), 1) if BARE_SKIP.search(line)]
    assert bare == [], "use tests.support.require.unavailable(component, reason)"


def ci_required_components() -> list[str]:
    text = (ROOT / ".ci" / "run").read_text()
    match = re.search(r"^export BROKER_TEST_REQUIRE=\$\{BROKER_TEST_REQUIRE:-([^}]*)\}", text,
                      re.MULTILINE)
    assert match, ".ci/run must export BROKER_TEST_REQUIRE with a default list"
    return shlex.split(match.group(1))[0].split(",")


def test_ci_requires_exactly_the_components_require_py_knows() -> None:
    assert ci_required_components() == list(require.COMPONENTS)


def test_readme_names_every_component() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"`BROKER_TEST_REQUIRE=([a-z,-]+)`", readme)
    assert match, "README.md gives the BROKER_TEST_REQUIRE list"
    assert match.group(1).split(",") == list(require.COMPONENTS)


@pytest.mark.parametrize("env,reason,fails", [
    ("", "bare reason", False),
    ("", "no slapd [needs ldap]", False),
    ("postgres", "no slapd [needs ldap]", False),
    ("ldap", "no slapd [needs ldap]", True),
    ("all", "no slapd [needs ldap]", True),
    ("postgres", "bare reason", True),  # with requirements set, an untagged skip is never fine
])
def test_a_required_skip_is_a_failure(monkeypatch: pytest.MonkeyPatch, env: str, reason: str,
                                      fails: bool) -> None:
    monkeypatch.setenv("BROKER_TEST_REQUIRE", env)
    assert (require.skip_problem(reason) is not None) is fails


def test_an_unknown_required_component_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_TEST_REQUIRE", "postgres,ldpa")
    with pytest.raises(ValueError, match="ldpa"):
        require.required()


def test_hypothesis_runs_the_ci_profile_by_default() -> None:
    import os

    from hypothesis import settings

    if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci":
        assert settings.default.derandomize is True and settings.default.deadline is None
