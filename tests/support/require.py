"""Optional test dependencies: a skip on a developer's machine, a failure where required.

``BROKER_TEST_REQUIRE`` (a comma-separated list of ``COMPONENTS``, or ``all``; `.ci/run` sets
it to every component) turns the skip of a missing component into a failure, so CI can never
pass by quietly skipping the tests that need it. The components, in one place (README.md's
Testing section and .ci/run name the same list; tests/unit/test_suite_hygiene.py checks):

- ``postgres``: the PostgreSQL server at 127.0.0.1:5432
- ``pcsc``: pcscd with the vsmartcard vpcd reader, pyscard, a private mount namespace (unshare)
- ``opensc``: OpenSC's tools and PKCS#11 module, libp11's OpenSSL engine
- ``nss``: the NSS tools (certutil, modutil, tstclnt)
- ``pkits``: the PKITS vectors (cryptography-vectors)
- ``deploy-tools``: deployment checks (systemd-analyze, haproxy, promtool)
- ``pam``: pamtester, pam_pkcs11, root for /etc/pam.d
- ``browser``: headless chromium with chromium-driver and selenium
- ``nginx``: nginx as a TLS peer requiring client certificates
- ``ldap``: an OpenLDAP server (slapd) and its tools
- ``samba``: a Samba Active Directory domain controller

Every skip goes through :func:`unavailable`, which tags the reason with its component;
tests/conftest.py fails any skip whose component is required, and any untagged skip whenever
``BROKER_TEST_REQUIRE`` is set.
"""

from __future__ import annotations

import os
import re
from typing import NoReturn

import pytest

COMPONENTS = ("postgres", "pcsc", "opensc", "nss", "pkits", "deploy-tools", "pam", "browser",
              "nginx", "ldap", "samba")
_TAG = re.compile(r" \[needs ([a-z-]+)\]$")


def required() -> set[str]:
    names = {n.strip() for n in os.environ.get("BROKER_TEST_REQUIRE", "").split(",") if n.strip()}
    unknown = names - set(COMPONENTS) - {"all"}
    if unknown:
        raise ValueError(f"BROKER_TEST_REQUIRE names unknown components {sorted(unknown)}; "
                         f"known: {', '.join(COMPONENTS)}")
    return set(COMPONENTS) if "all" in names else names


def component_of(skip_reason: str) -> str | None:
    """The component a skip reason made by :func:`unavailable` names, else None."""
    match = _TAG.search(skip_reason.strip())
    return match.group(1) if match else None


def skip_problem(skip_reason: str) -> str | None:
    """Why a skip with ``skip_reason`` must fail the run under BROKER_TEST_REQUIRE, or None."""
    needed = required()
    if not needed:
        return None
    component = component_of(skip_reason)
    if component is None:
        return (f"skipped without naming a component ({skip_reason.strip()}); with "
                "BROKER_TEST_REQUIRE set every skip goes through "
                "tests.support.require.unavailable()")
    if component in needed:
        return f"{skip_reason.strip()} — and BROKER_TEST_REQUIRE says {component} must be here"
    return None


def unavailable(component: str, reason: str) -> NoReturn:
    """Skip for ``reason``, or fail when ``component`` is required."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown test component {component!r}")
    if component in required():
        pytest.fail(f"{reason} — and BROKER_TEST_REQUIRE says {component} must be here",
                    pytrace=False)
    pytest.skip(f"{reason} [needs {component}]", allow_module_level=True)
