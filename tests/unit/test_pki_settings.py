"""A directory's path-validation settings: one frozen value in broker/pki, read from a row or a
file entry by name, each profile relaxation a declared directory setting, and the login path
free of the admin declarations."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from broker.admin.directories import DIRECTORIES
from broker.pki.errors import PkiError
from broker.pki.policies import PolicyInputs
from broker.pki.profile import RELAXES, STRICT, ProfileOptions
from broker.pki.settings import PkiSettings, profile_options, row_profile_options
from broker.store.models import Directory
from tests.unit.test_import_cycles import import_graph

OPTIONS = [f.name for f in dataclasses.fields(ProfileOptions)]


def _row(**over: object) -> SimpleNamespace:
    values: dict[str, object] = {
        "max_chain_depth": None, "required_policies": [], "explicit_policy": False,
        "policy_mapping_inhibit": False, "any_policy_inhibit": False, "aia_fetch": False,
        **{name: False for name in OPTIONS}}
    return SimpleNamespace(**{**values, **over})


@pytest.mark.parametrize("name", OPTIONS)
def test_every_profile_option_is_a_declared_directory_setting(name: str) -> None:
    """An option of ProfileOptions without its directory setting could never be turned on: the
    declaration (API, CLI, file, console), the column and the relaxed checks must all exist."""
    field = DIRECTORIES.field(name)
    assert field.type is bool and field.default is False
    assert field.create and field.update and field.in_file and field.in_api and field.output
    assert field.group is None and field.attr == name
    assert name in Directory.__table__.columns
    assert RELAXES[name]


def test_settings_read_from_a_row() -> None:
    settings = PkiSettings.of_directory(_row(
        max_chain_depth=2, required_policies=["2.16.840.1.101.3.2.1.3.13"],
        explicit_policy=True, aia_fetch=True, **{name: True for name in OPTIONS}))
    assert settings == PkiSettings(
        max_depth=2, policy=PolicyInputs(frozenset({"2.16.840.1.101.3.2.1.3.13"}), True),
        aia_fetch=True, profile_options=ProfileOptions(**{name: True for name in OPTIONS}))
    assert settings.verify_kwargs()["profile_options"].relaxed()
    hash(settings)  # a frozen trust snapshot holds it


def test_defaults_are_the_strict_profile() -> None:
    assert PkiSettings.of_directory(_row()) == PkiSettings()
    assert row_profile_options(None) is STRICT
    assert PkiSettings().verify_kwargs() == {"max_depth": 6, "policy": PolicyInputs(),
                                             "aia_fetch": False, "profile_options": STRICT}


def test_a_bad_policy_oid_is_refused() -> None:
    with pytest.raises(PkiError) as err:
        PkiSettings.of_directory(_row(required_policies=["anyPolicy"]))
    assert err.value.code == "certificate_policy_mismatch"


def test_profile_options_from_a_file_entry_by_name() -> None:
    entry = {name: True for name in OPTIONS}
    assert profile_options(entry.get) == ProfileOptions(**entry)
    assert profile_options(lambda name: None) == STRICT


def test_the_login_path_does_not_import_the_admin_declarations() -> None:
    graph = import_graph()
    for start in ("broker.service.trust", "broker.service.login", "broker.pki.settings"):
        seen, todo = {start}, [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        admin = sorted(m for m in seen if m.startswith("broker.admin"))
        assert not admin, f"{start} reaches {admin}"
