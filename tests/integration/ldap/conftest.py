"""Session-wide real directory servers: OpenLDAP slapd (``ldap``) and a Samba AD DC (``samba``).

Provisioning Samba takes ~15 s on this machine, so each server is started once per test session
(its own temporary folder, its own loopback address or ports) and stopped at the end.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest

from tests.support.ldapserver import SAMBA, SAMBA_TOOL, SLAPD, SambaDc, Slapd
from tests.support.require import unavailable


def _python_ldap(component: str) -> None:
    if importlib.util.find_spec("ldap") is None:
        unavailable(component, "python-ldap is not installed (pip install -e '.[ldap]')")


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    from tests.support.ldapserver import start_slapd

    _python_ldap("ldap")
    if not os.access(SLAPD, os.X_OK):
        unavailable("ldap", "OpenLDAP's slapd is not installed (apt-get install slapd)")
    server = start_slapd(tmp_path_factory.mktemp("slapd"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def samba_dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaDc]:
    from tests.support.ldapserver import start_samba

    _python_ldap("samba")
    if not (os.access(SAMBA, os.X_OK) and os.access(SAMBA_TOOL, os.X_OK)):
        unavailable("samba", "Samba is not installed (apt-get install samba)")
    if os.geteuid() != 0:
        unavailable("samba", "a Samba AD DC needs root to run")
    server = start_samba(tmp_path_factory.mktemp("samba"))
    yield server
    server.stop()
