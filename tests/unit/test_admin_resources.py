"""The admin resource declarations: one entry reaches every path (API models, CLI options, the
declarative file, export, a console's description), and the shared rules hold everywhere."""

from __future__ import annotations

import dataclasses
from typing import Any

import click
import pytest

from broker.admin.common import list_rows
from broker.admin.directories import (
    DIRECTORIES,
    create_directory,
    directory_warnings,
    update_directory,
)
from broker.admin.fields import ID_PATTERN, Field
from broker.admin.framework import Call
from broker.admin.registry import RESOURCES
from broker.admin.trust import TRUST, add_trust
from broker.admin.workspaces import WORKSPACES
from broker.service.errors import ServiceError


def with_extra_setting() -> Any:
    """DIRECTORIES with one more per-directory setting, declared the way a new one is."""
    extra = Field("aia_fetch", bool, "Fetch AIA", "Fetch missing intermediates from AIA URLs.",
                  default=False, group="revocation", column="revocation_aia_fetch")
    return dataclasses.replace(DIRECTORIES, fields=(*DIRECTORIES.fields, extra))


def test_one_field_entry_reaches_the_api_the_file_and_the_cli() -> None:
    from broker.admin_cli import build_command

    res = with_extra_setting()
    create = res.create_model.model_json_schema()
    group = create["$defs"]["DirectoryRevocationCreate"]["properties"]
    assert group["aia_fetch"] == {"default": False, "description":
                                  "Fetch missing intermediates from AIA URLs.",
                                  "title": "Fetch AIA", "type": "boolean"}
    patch = res.validate({"revocation": {"aia_fetch": True}}, update=True)
    assert res.values(patch) == {"revocation_aia_fetch": True}
    assert "aia_fetch" in res.out_model.model_json_schema()["$defs"][
        "DirectoryRevocationOut"]["properties"]
    spec = res.file_model().model_validate({"id": "corp", "name": "C", "region": "r",
                                            "revocation": {"aia_fetch": True}})
    assert spec.model_dump()["revocation"]["aia_fetch"] is True
    options = {o for p in build_command(res, res.operation("update")).params
               if isinstance(p, click.Option) for o in (*p.opts, *p.secondary_opts)}
    assert {"--aia-fetch", "--no-aia-fetch"} <= options
    assert "revocation.aia_fetch" in [f["name"] for f in res.describe()["fields"]]


BODIES = {"directories": {"name": "n", "region": "r"},
          "workspaces": {"directory": "corp", "user": "u", "protocol": "WSP"}}


def test_a_list_setting_with_an_item_rule_is_one_entry_too() -> None:
    oids = Field("required_policies", list, "Required policies",
                 "Certificate-policy OIDs a login certificate must assert.", default=[],
                 item_limits={"pattern": r"^[0-2](\.[0-9]+)+$"})
    res = dataclasses.replace(DIRECTORIES, fields=(*DIRECTORIES.fields, oids))
    assert res.validate({"required_policies": ["2.16.840.1.101.3.2.1.3.13"]},
                        update=True) == {"required_policies": ["2.16.840.1.101.3.2.1.3.13"]}
    with pytest.raises(ServiceError) as err:
        res.validate({"required_policies": ["not-an-oid"]}, update=True)
    assert "required_policies" in err.value.message
    assert res.defaults()["required_policies"] == []


@pytest.mark.parametrize("resource", sorted(BODIES))
def test_ids_follow_one_rule(resource: str) -> None:
    res = RESOURCES[resource]
    for bad in ("bad id!", "-leading", "x" * 65, ""):
        with pytest.raises(ServiceError) as err:
            res.validate({"id": bad, **BODIES[resource]})
        assert ID_PATTERN in err.value.message, err.value.message
    assert res.validate({"id": "a.b_c-1", **BODIES[resource]})["id"] == "a.b_c-1"


def test_the_certmap_default_and_rules_are_declared_once() -> None:
    created = DIRECTORIES.validate({"id": "corp", "name": "C", "region": "r"})
    assert created["certmap"] == ["upn", "email"]
    assert DIRECTORIES.defaults()["certmap"] == ["upn", "email"]
    for bad in (["upn", "upn"], [], ["dns"], [{}], [["upn"]], "upn"):
        with pytest.raises(ServiceError):
            DIRECTORIES.validate({"certmap": bad}, update=True)


def test_a_console_can_render_every_resource_from_its_description() -> None:
    for res in RESOURCES.values():
        desc = res.describe()
        assert desc["label"] and desc["help"] and desc["list_columns"], res.name
        for f in desc["fields"]:
            assert f["label"] and f["help"], (res.name, f["name"])
        for op in desc["operations"]:
            assert op["scope"] in ("read", "write")
            assert (op["scope"] == "read") == (op["method"] == "GET"), (res.name, op)
    removal = DIRECTORIES.field("smart_card.removal_action").describe()
    assert removal["choices"] == ["none", "lock", "disconnect"] and removal["default"] == "lock"
    assert WORKSPACES.field("id").describe()["create_only"] is True


def test_policy_warnings_name_the_reason_and_a_positive_control() -> None:
    from broker.config import Settings
    from broker.service.context import BrokerContext

    catalogue = BrokerContext(Settings()).catalogue
    east = directory_warnings(catalogue, "us-east-1", True, True, True)
    assert [w["code"] for w in east] == ["region_pre_session_unavailable"]
    assert directory_warnings(catalogue, "us-gov-west-1", True, True, False) == []
    nothing = directory_warnings(catalogue, "us-east-1", False, False, False)
    assert [w["code"] for w in nothing] == ["no_login_method"]


# --------------------------------------------------------------------------- against a database

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.fixture
def ctx(database: Any) -> Any:
    from broker.config import Settings
    from broker.service.context import BrokerContext

    context = BrokerContext(Settings(base_dir=REPO), database=database)
    context.db.transaction(lambda s: create_directory(
        s, context, {"id": "corp", "name": "Corp", "region": "us-gov-west-1"}, "token:unit"))
    return context


def test_path_validation_settings_are_settable_and_checked(ctx: Any) -> None:
    view = ctx.db.transaction(lambda s: update_directory(s, ctx, "corp", {
        "required_policies": ["2.16.840.1.101.3.2.1.3.13"], "explicit_policy": True,
        "max_chain_depth": 2, "aia_fetch": True}, "token:unit"))
    assert (view["required_policies"], view["explicit_policy"], view["max_chain_depth"],
            view["aia_fetch"]) == (["2.16.840.1.101.3.2.1.3.13"], True, 2, True)
    for bad in ({"required_policies": ["anyPolicy"]}, {"max_chain_depth": 256},
                {"max_chain_depth": -1}):
        with pytest.raises(ServiceError) as err:
            ctx.db.transaction(lambda s, b=bad: update_directory(s, ctx, "corp", b,
                                                                       "token:unit"))
        assert err.value.code == "validation_failed", bad
    from broker.pki.settings import PkiSettings
    from broker.store.models import Directory

    settings = ctx.db.transaction(lambda s: PkiSettings.of_directory(s.get(Directory, "corp")))
    assert settings.max_depth == 2 and settings.aia_fetch is True


def test_trust_uploads_pass_the_ca_profile(ctx: Any) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from tests.unit.pki.test_profile import Pki

    good = Pki()
    pem = good.root.public_bytes(serialization.Encoding.PEM).decode()
    [added] = ctx.db.transaction(lambda s: add_trust(s, "corp", pem, None, "token:unit"))
    assert any("short serial number" in w for w in added["warnings"]), added
    listed = ctx.db.transaction(lambda s: list_rows(
        TRUST, s, ctx, Call("", {"directory_id": "corp"})))["items"]
    assert listed[0]["warnings"] == added["warnings"]

    bad = Pki(inter_exts=[(x509.BasicConstraints(True, 0), False)])
    pem = bad.inter.public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(ServiceError) as err:
        ctx.db.transaction(lambda s: add_trust(s, "corp", pem, None, "token:unit"))
    assert err.value.code == "certificate_profile_invalid"
    assert any("basicConstraints is not critical" in r for r in err.value.details["reasons"])


def test_profile_relaxation_is_one_declared_setting(ctx: Any) -> None:
    """accept_noncritical_constraints: declared once, it reaches the verifier's settings and the
    trust upload (refused before, accepted with a warning after)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from broker.pki.settings import PkiSettings
    from broker.store.models import Directory
    from tests.unit.pki.test_profile import Pki

    legacy = Pki(inter_exts=[(x509.BasicConstraints(True, 0), False)])
    pem = legacy.inter.public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(ServiceError) as err:
        ctx.db.transaction(lambda s: add_trust(s, "corp", pem, None, "token:unit"))
    assert err.value.code == "certificate_profile_invalid"
    view = ctx.db.transaction(lambda s: update_directory(
        s, ctx, "corp", {"accept_noncritical_constraints": True}, "token:unit"))
    assert view["accept_noncritical_constraints"] is True
    settings = ctx.db.transaction(lambda s: PkiSettings.of_directory(s.get(Directory, "corp")))
    assert settings.profile_options.accept_noncritical_constraints is True
    [added] = ctx.db.transaction(lambda s: add_trust(s, "corp", pem, None, "token:unit"))
    assert any("relaxes that rule" in w for w in added["warnings"]), added


@pytest.mark.parametrize("bad", ["Corp\nGovCloud", "Corp\rGov", "Corp\tGov", "Corp\x00",
                                 "Corp\x1b[31m"])
def test_one_line_text_fields_refuse_control_characters(bad: str) -> None:
    # A line break in a name forges lines in logs, CLI tables and exported files.
    body = {"id": "corp", **BODIES["directories"], "name": bad}
    with pytest.raises(ServiceError) as err:
        DIRECTORIES.validate(body)
    assert "name" in err.value.message and "control characters" in err.value.message
    assert DIRECTORIES.validate({"name": "Corp GovCloud – HQ"}, update=True) == {
        "name": "Corp GovCloud – HQ"}


def test_multi_line_inputs_keep_their_line_breaks() -> None:
    # PEM uploads are read from files: line breaks are their format.
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    assert TRUST.validate({"pem": pem})["pem"] == pem


def test_operation_errors_are_codes() -> None:
    """Each declared error is a member of the closed set (a misspelt one cannot be declared),
    and every operation under a directory's path names directory_unknown."""
    from broker.codes import Code

    for resource in RESOURCES.values():
        for op in resource.operations:
            assert all(isinstance(e, Code) for e in op.errors), (resource.name, op.name)
            if op.path.startswith("/directories/{directory_id}"):
                assert Code.DIRECTORY_UNKNOWN in op.errors, (resource.name, op.name)


def test_each_resource_is_bound_once() -> None:
    """A declaration is one statement: no module of broker/admin assigns a top-level name
    twice (as ``X = Resource(…)`` then ``X = _ops(X, …)`` once did)."""
    import ast
    from pathlib import Path

    import broker.admin

    for path in Path(broker.admin.__file__).parent.glob("*.py"):
        names: list[str] = []
        for node in ast.parse(path.read_text()).body:
            targets = (node.targets if isinstance(node, ast.Assign) else
                       [node.target] if isinstance(node, ast.AnnAssign) else [])
            names += [t.id for t in targets if isinstance(t, ast.Name)]
        assert len(names) == len(set(names)), (path.name, names)
