"""Optional test dependencies: a skip on a developer's machine, a failure where required.

``BROKER_TEST_REQUIRE=postgres,pcsc,opensc,nss,deploy-tools,pam,browser`` (set by `.ci/run`;
``all`` for everything) turns the skip of a missing PostgreSQL, PC/SC stack, OpenSC, NSS tools,
deployment-check tools, PAM tools (pamtester, pam_pkcs11, root for /etc/pam.d) or headless
browser (chromium, chromedriver) into a failure, so CI can never pass by quietly skipping the
tests that need them.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

COMPONENTS = ("postgres", "pcsc", "opensc", "nss", "pkits", "deploy-tools", "pam", "browser")


def required() -> set[str]:
    names = {n.strip() for n in os.environ.get("BROKER_TEST_REQUIRE", "").split(",") if n.strip()}
    return set(COMPONENTS) if "all" in names else names


def unavailable(component: str, reason: str) -> NoReturn:
    """Skip for ``reason``, or fail when ``component`` is required."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown test component {component!r}")
    if component in required():
        pytest.fail(f"{reason} — and BROKER_TEST_REQUIRE says {component} must be here",
                    pytrace=False)
    pytest.skip(reason, allow_module_level=True)
