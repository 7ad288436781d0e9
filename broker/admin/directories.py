"""Directories: region, smart-card, revocation and path-validation settings, certmap,
password login and the LDAP server users come from; create, change, delete.

Adding a per-directory setting is one :class:`~broker.admin.fields.Field` in ``DIRECTORIES``
(and its column). A relaxation of the RFC 5280 profile is also a field of
:class:`broker.pki.profile.ProfileOptions` of the same name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, object_session

import broker.policy as policy
from broker import kinds
from broker.admin.common import (
    DIR_404,
    DIRECTORY_PATH,
    READ,
    WRITE,
    check_region,
    list_rows,
)
from broker.admin.fields import ID_RULES, CliSpec, Field, out_field, time_field
from broker.admin.framework import Operation, Resource
from broker.admin.pagination import Filter
from broker.codes import Code
from broker.service import audit
from broker.service.coverage import directory_gaps
from broker.service.errors import ServiceError
from broker.service.ldapdir import FLAVOURS, check_settings, parse_pairs, warnings_of
from broker.service.lookups import get_directory_row
from broker.store.models import Directory, RegistrationCode

if TYPE_CHECKING:
    from broker.service.context import BrokerContext

CERTMAP_RULES = kinds.values(kinds.CertmapRule)


def _unique(rules: Any) -> Any:
    # Runs before the type check: only a list of strings can be judged (the type check refuses
    # anything else with a clear message).
    if isinstance(rules, list) and all(isinstance(r, str) for r in rules) \
            and len(set(rules)) != len(rules):
        raise ValueError("certmap rules must not repeat")
    return rules


class SettingWarning(BaseModel):
    """A setting that was saved but cannot take effect, with the policy's reason code."""

    model_config = ConfigDict(extra="forbid")
    code: str
    field: str
    message: str


def directory_warnings(catalogue: Any, region: str, pre_session: bool, in_session: bool,
                       password_login: bool) -> list[dict[str, str]]:
    """Why these directory settings cannot (fully) take effect in ``region``, from the pure
    policy: ``region_pre_session_unavailable``, ``in_session_not_allowed`` and
    ``no_login_method`` (no client could log in at all). Empty when everything applies."""
    if region not in catalogue:
        return []
    entry = catalogue.get(region)
    settings = policy.DirectorySettings(pre_session=pre_session, in_session=in_session,
                                        password_login=password_login)
    out: list[dict[str, str]] = []
    pre = policy.decide_smart_card(entry, settings, policy.Purpose.PRE_SESSION)
    if pre_session and policy.Reason.REGION_PRE_SESSION_UNAVAILABLE in pre.reasons:
        out.append({"code": policy.Reason.REGION_PRE_SESSION_UNAVAILABLE.value,
                    "field": "smart_card.pre_session",
                    "message": f"pre-session smart-card login is not available in {region}; "
                               "clients will not be offered \"Insert your smart card\""})
    inside = policy.decide_smart_card(entry, settings, policy.Purpose.IN_SESSION)
    if in_session and not inside.allowed:
        out.append({"code": policy.Reason.IN_SESSION_NOT_ALLOWED.value,
                    "field": "smart_card.in_session",
                    "message": f"in-session smart-card use is not available in {region}"})
    if not password_login and not pre.allowed:
        out.append({"code": "no_login_method", "field": "password_login",
                    "message": "with password login off and no pre-session smart-card login, "
                               "no client can log in to this directory"})
    return out


def _directory_row_warnings(d: Directory, ctx: Any) -> list[dict[str, str]]:
    if ctx is None:
        return []
    out = directory_warnings(ctx.catalogue, d.region, d.sc_pre_session, d.sc_in_session,
                             d.password_login)
    session = object_session(d)
    if session is not None:
        out += directory_gaps(session, d.id, ctx.now())
    return out + warnings_of(d)


def _check_ldap(d: Directory) -> None:
    problem = check_settings(d)
    if problem is not None:
        raise ServiceError(Code.VALIDATION_FAILED, f"{problem[0]}: {problem[1]}",
                           {"field": problem[0], "fields": [problem[0]]})


def get_directory(session: Session, directory_id: str, ctx: Any = None) -> dict[str, Any]:
    return DIRECTORIES.view(get_directory_row(session, directory_id), ctx)


def create_directory(session: Session, ctx: BrokerContext, fields: Mapping[str, Any],
                     actor: str) -> dict[str, Any]:
    """Create a directory from its declared fields (defaults filled in); conflict when the id
    exists, validation_failed for an unknown region or an invalid field. The view carries
    ``warnings`` for settings the region's policy makes ineffective."""
    data = DIRECTORIES.validate(fields)
    directory_id = data["id"]
    check_region(ctx, data["region"])
    if session.get(Directory, directory_id) is not None:
        raise ServiceError(Code.CONFLICT, f"A directory {directory_id!r} already exists.",
                           {"directory": directory_id})
    values = {**DIRECTORIES.defaults(), **DIRECTORIES.values(data)}
    values.pop("id", None)
    d = Directory(id=directory_id, created_at=ctx.now(), updated_at=ctx.now(), **values)
    _check_ldap(d)
    session.add(d)
    session.flush()
    view = DIRECTORIES.view(d, ctx)
    audit.insert(session, "directory.create", "change", directory_id=d.id, actor=actor,
                 region=d.region, warnings=[w["code"] for w in view["warnings"]])
    return view


def check_region_move(session: Session, d: Directory, region: str) -> None:
    """A code's prefix names its region: a directory with active codes may not move."""
    if region == d.region:
        return
    live = session.scalar(select(RegistrationCode.id).where(
        RegistrationCode.directory_id == d.id,
        RegistrationCode.state == kinds.CodeState.ACTIVE).limit(1))
    if live is not None:
        raise ServiceError(Code.VALIDATION_FAILED,
                           f"Directory {d.id!r} has active registration codes for {d.region}; "
                           f"revoke them before moving it to {region} (a code's prefix names "
                           "its region).", {"field": "region"})


def update_directory(session: Session, ctx: BrokerContext, directory_id: str,
                     fields: Mapping[str, Any], actor: str) -> dict[str, Any]:
    d = get_directory_row(session, directory_id)
    values = DIRECTORIES.values(DIRECTORIES.validate(fields, update=True))
    if "region" in values and values["region"] != d.region:
        check_region(ctx, values["region"])
        check_region_move(session, d, values["region"])
    changed = DIRECTORIES.assign(d, values)
    _check_ldap(d)
    if changed:
        d.updated_at = ctx.now()
        session.flush()
    view = DIRECTORIES.view(d, ctx)
    if changed:
        audit.insert(session, "directory.update", "change", directory_id=d.id, actor=actor,
                     fields=changed, warnings=[w["code"] for w in view["warnings"]])
    return view


def delete_directory(session: Session, directory_id: str, actor: str) -> None:
    """Delete a directory and everything in it (users, WorkSpaces, trust, codes, sessions)."""
    d = get_directory_row(session, directory_id)
    session.expunge(d)
    # The database cascades (ON DELETE CASCADE) to every row of the directory.
    session.execute(delete(Directory).where(Directory.id == directory_id))
    audit.insert(session, "directory.delete", "change", directory_id=directory_id, actor=actor)


def _ldap(name: str, type_: Any, label: str, help: str, **kw: Any) -> Field:
    return Field(name, type_, label, help, group="ldap", column=f"ldap_{name}",
                 cli=CliSpec(name=f"ldap-{name.replace('_', '-')}"), **kw)


_LDAP_TEXT = {"min_length": 1, "max_length": 1000}
_LDAP_FIELDS = (
    _ldap("url", str, "LDAP URL", "ldaps://HOST[:PORT], or ldap://HOST[:PORT] with StartTLS "
          "(plain ldap:// only on loopback). Empty: the broker's own users.", nullable=True,
          default=None, limits={"pattern": r"^ldaps?://[^\s/]+/?$", "max_length": 500}),
    _ldap("start_tls", bool, "StartTLS", "Upgrade an ldap:// connection with StartTLS.",
          default=False),
    _ldap("ca_file", str, "LDAP CA file", "PEM file of the CA of the LDAP server's TLS "
          "certificate (absolute path; empty: the system's CAs). The hostname is checked.",
          nullable=True, default=None, limits=_LDAP_TEXT),
    _ldap("flavour", str, "LDAP flavour", "ad (Active Directory: account state, nested "
          "groups, altSecurityIdentities) or generic (inetOrgPerson).", default="ad",
          choices=FLAVOURS),
    _ldap("base_dn", str, "Base DN", "Where users are searched.", nullable=True, default=None,
          limits=_LDAP_TEXT),
    _ldap("bind_dn", str, "Bind DN", "The service account the broker binds as.",
          nullable=True, default=None, limits=_LDAP_TEXT),
    _ldap("bind_password_file", str, "Bind password file",
          "Absolute path of the file holding the service account's password (mode 600 or "
          "stricter; the password is never stored, exported or logged).", nullable=True,
          default=None, limits=_LDAP_TEXT),
    _ldap("user_name_attribute", str, "User name attribute",
          "The user's name in the broker (WorkSpace owner, audit); default sAMAccountName "
          "(ad) or uid (generic).", nullable=True, default=None,
          limits={"pattern": r"^[A-Za-z][A-Za-z0-9-]{0,99}$"}),
    _ldap("user_filter", str, "User filter", "Every user found must also match this LDAP "
          "filter; default (&(objectCategory=person)(objectClass=user)) or "
          "(objectClass=inetOrgPerson).", nullable=True, default=None, limits=_LDAP_TEXT),
    _ldap("attributes", dict[str, str], "Certmap attributes",
          "Certmap rule → attribute, e.g. upn=userPrincipalName, email=mail (defaults per "
          "flavour).", nullable=True, default=None, validators=(parse_pairs,)),
    _ldap("required_groups", list, "Required groups", "Group DNs; a user must be in one "
          "(nested membership counts with ad).", default=[],
          item_limits={"min_length": 1, "max_length": 1000}, limits={"max_length": 50}),
    _ldap("cache_ttl_s", int, "LDAP cache seconds", "How long a process keeps a found user "
          "(refusals: at most 30 s).", default=300, limits={"ge": 0, "le": 86400}),
    _ldap("timeout_s", int, "LDAP timeout seconds", "Bound of each LDAP connect, TLS "
          "handshake and operation; past it logins answer directory_unavailable.",
          default=3, limits={"ge": 1, "le": 60}),
)


DIRECTORIES: Resource = Resource(
    "directories", "directory", "Directories",
    "Directories: region, smart-card and revocation settings, certmap, password login.",
    Directory, tag="directories",
    fields=(
        Field("id", str, "ID", "Stable, operator-chosen identifier.", update=False,
              list_column=True, cli=CliSpec(positional=True), **ID_RULES),
        Field("name", str, "Name", "Display name shown to users.", list_column=True,
              limits={"min_length": 1, "max_length": 200}),
        Field("region", str, "Region", "A region id from the region catalogue (its rules "
              "decide which smart-card settings can take effect).", list_column=True,
              limits={"min_length": 1, "max_length": 32}),
        Field("password_login", bool, "Password login", "Allow password login.",
              default=False, list_column=True),
        Field("pre_session", bool, "Pre-session smart-card login",
              "Log in with a smart card (only where the region allows it).", default=False,
              group="smart_card", column="sc_pre_session", list_column=True),
        Field("in_session", bool, "In-session smart cards",
              "Smart cards inside the session (sudo, browsers).", default=False,
              group="smart_card", column="sc_in_session", list_column=True),
        Field("removal_action", str, "On card removal",
              "What a session does when the card is removed.", default="lock",
              group="smart_card", choices=kinds.values(kinds.RemovalAction), list_column=True),
        Field("crl", bool, "Check CRLs", "Check certificates against CRLs.", default=True,
              group="revocation", column="revocation_crl"),
        Field("ocsp", bool, "Check OCSP", "Ask the certificate's OCSP responder.",
              default=False, group="revocation", column="revocation_ocsp"),
        Field("fail_mode", str, "Revocation fail mode",
              "soft: allow when revocation status is unknown; hard: refuse.", default="soft",
              group="revocation", column="revocation_fail_mode",
              choices=kinds.values(kinds.FailMode)),
        Field("certmap", list, "Certificate mapping",
              "Rules that find the user from the certificate, tried in order.",
              default=["upn", "email"], choices=CERTMAP_RULES, list_column=True,
              limits={"min_length": 1, "max_length": len(CERTMAP_RULES)},
              validators=(_unique,)),
        Field("required_eku", str, "Required EKU",
              "Extended key usage the login certificate must carry: client-auth "
              "(clientAuth or smart-card logon) or any.", default="client-auth",
              choices=kinds.values(kinds.RequiredEku)),
        # Path validation inputs (RFC 5280 §6.1.1), one entry each: API, CLI, file, export.
        Field("required_policies", list, "Required policies",
              "Certificate-policy OIDs of the initial policy set (empty: any policy).",
              default=[], item_limits={"pattern": r"^[0-2](\.[0-9]{1,20}){1,30}$"},
              limits={"max_length": 50}),
        Field("explicit_policy", bool, "Explicit policy",
              "initial-explicit-policy: the path must be valid for a required policy.",
              default=False),
        Field("policy_mapping_inhibit", bool, "Inhibit policy mapping",
              "initial-policy-mapping-inhibit.", default=False),
        Field("any_policy_inhibit", bool, "Inhibit anyPolicy",
              "initial-any-policy-inhibit.", default=False),
        Field("max_chain_depth", int, "Maximum chain depth",
              "Intermediate CAs allowed between the login certificate and the anchor.",
              default=6, limits={"ge": 0, "le": 255}),
        Field("aia_fetch", bool, "Fetch intermediates (AIA)",
              "Fetch missing intermediates from the certificate's AIA caIssuers URL (HTTP).",
              default=False),
        Field("accept_noncritical_constraints", bool, "Accept non-critical CA constraints",
              "Accept (with a warning) CA certificates whose basicConstraints or "
              "policyConstraints is not critical, which RFC 5280 forbids; off: refused.",
              default=False),
        # Users from LDAP / Active Directory (DESIGN §11); no url: the broker's own users.
        *_LDAP_FIELDS,
        out_field("warnings", list[SettingWarning], "Warnings",
             "Settings that cannot take effect in this region, with the policy's reason.",
             read=_directory_row_warnings),
        time_field("created_at", "Created", "When the directory was created."),
        time_field("updated_at", "Updated", "When the directory last changed."),
    ),
    operations=(
        Operation("list", "GET", "/directories", READ,
                  lambda s, ctx, c: list_rows(DIRECTORIES, s, ctx, c), "List directories.",
                  out="page", filters=(Filter("region", "Only directories in this region.",
                                              column=Directory.region),)),
        Operation("create", "POST", "/directories", WRITE,
                  lambda s, ctx, c: create_directory(s, ctx, c.body, c.actor),
                  "Create a directory (the answer's warnings name settings the region's policy "
                  "makes ineffective).", status=201, body="create",
                  errors=(Code.CONFLICT, Code.VALIDATION_FAILED), audit="directory.create",
                  message="directory {id} created"),
        Operation("get", "GET", DIRECTORY_PATH, READ,
                  lambda s, ctx, c: get_directory(s, c.path["directory_id"], ctx),
                  "Get a directory.", errors=DIR_404),
        Operation("update", "PATCH", DIRECTORY_PATH, WRITE,
                  lambda s, ctx, c: update_directory(s, ctx, c.path["directory_id"], c.body,
                                                     c.actor),
                  "Change a directory (only the fields given).", body="update",
                  errors=(*DIR_404, Code.VALIDATION_FAILED), audit="directory.update",
                  message="directory {id} updated"),
        Operation("delete", "DELETE", DIRECTORY_PATH, WRITE,
                  lambda s, ctx, c: delete_directory(s, c.path["directory_id"], c.actor),
                  "Delete a directory and everything in it.", status=204, out=None,
                  errors=DIR_404, audit="directory.delete",
                  confirm="Delete directory {directory_id} and everything in it?",
                  message="directory {directory_id} deleted"),
    ),
)
