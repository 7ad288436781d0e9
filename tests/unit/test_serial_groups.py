"""tests/support/serial.py: what pytest-xdist runs one after another, in one worker."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests.support import serial

ROOT = Path(__file__).resolve().parents[2]


def test_card_and_ldap_tests_have_their_groups_and_the_rest_none() -> None:
    assert serial.group_of("tests/integration/pcsc/test_pcscd_restart.py::test_x") == "pcsc"
    assert serial.group_of("tests/integration/pam/test_pam_sudo.py::test_x[sqlite]") == "pcsc"
    assert serial.group_of("tests/integration/client/test_pcsc_client.py::test_x") == "pcsc"
    assert serial.group_of("tests/integration/ldap/test_ad_login.py::test_x") == "ldap"
    assert serial.group_of("tests/integration/client/conftest.py") is None
    assert serial.group_of("tests/integration/test_soak.py::test_x") is None


def _item(path: Path, *markers: str) -> Any:
    return SimpleNamespace(path=path, nodeid=str(path.relative_to(ROOT)) + "::t",
                           get_closest_marker=lambda name: name if name in markers else None)


def test_a_pcsc_test_outside_the_pcsc_folders_is_named() -> None:
    inside = _item(ROOT / "tests/integration/pcsc/test_opensc.py", "pcsc")
    outside = _item(ROOT / "tests/integration/test_server.py", "pcsc")
    plain = _item(ROOT / "tests/integration/test_server.py", "postgres")
    assert serial.misplaced([inside, outside, plain], str(ROOT)) == [outside.nodeid]


def test_the_scheduler_makes_one_unit_per_group_and_per_file() -> None:
    cls = serial.scheduler_class()
    sched = cls.__new__(cls)  # _split_scope needs none of the controller's state
    split = sched._split_scope
    assert split("tests/integration/pcsc/test_a.py::t1") == \
        split("tests/integration/pam/test_b.py::t2[sqlite]") == "group:pcsc"
    assert split("tests/integration/ldap/test_c.py::t") == "group:ldap"
    assert split("tests/unit/test_d.py::t1") == split("tests/unit/test_d.py::t2[x]") \
        == "tests/unit/test_d.py"
    assert split("tests/unit/test_d.py::t1@mine") == "mine"
