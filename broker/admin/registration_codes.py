"""Registration codes: issue, rotate (the old code keeps working for the grace period),
revoke, list. A code's prefix names its directory's region."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker import kinds, registration
from broker.admin.common import (
    DIR_404,
    DIRECTORY_PATH,
    READ,
    WRITE,
    directory_filter,
    list_rows,
)
from broker.admin.fields import CliSpec, ConsoleSpec, Field, out_field, time_field
from broker.admin.framework import Operation, Resource
from broker.admin.pagination import Filter
from broker.codes import Code
from broker.errors import BrokerError
from broker.service import registrations
from broker.service.errors import ServiceError
from broker.service.lookups import get_directory_row
from broker.store.models import RegistrationCode

if TYPE_CHECKING:
    from broker.service.context import BrokerContext


def _code(session: Session, code: str) -> dict[str, Any]:
    row = session.scalar(select(RegistrationCode).where(RegistrationCode.code == code))
    if row is None:
        raise ServiceError(Code.RESOURCE_NOT_FOUND, "no such registration code")
    return CODES.view(row)


def issue_codes(session: Session, ctx: BrokerContext, directory_id: str, count: int,
                actor: str) -> list[dict[str, Any]]:
    get_directory_row(session, directory_id)
    codes = [registrations.issue_code(ctx, session, directory_id, actor) for _ in range(count)]
    session.flush()
    return [_code(session, c) for c in codes]


def rotate_code(session: Session, ctx: BrokerContext, code: str, actor: str) -> dict[str, Any]:
    """The successor code; the old one keeps working for registration.rotation_grace_s."""
    new = registrations.rotate_code(ctx, session, _canonical_code(ctx, code), actor)
    session.flush()
    return _code(session, new)


def revoke_code(session: Session, ctx: BrokerContext, code: str, actor: str) -> dict[str, Any]:
    canonical = _canonical_code(ctx, code)
    registrations.revoke_code(ctx, session, canonical, actor)
    session.flush()
    return _code(session, registration_key(ctx, canonical))


def registration_key(ctx: BrokerContext, code: str) -> str:
    return registration.parse(code, ctx.catalogue).lookup_key


def _canonical_code(ctx: BrokerContext, code: str) -> str:
    try:
        registration_key(ctx, code)
    except BrokerError as exc:
        raise ServiceError(Code.VALIDATION_FAILED, exc.message, {"field": "code"}) from None
    return code


_CODE_PARAM = Field("code", str, "Registration code", "The code (any case).",
                    limits={"min_length": 1, "max_length": 64}, cli=CliSpec(positional=True))

CODES: Resource = Resource(
    "registration-codes", "registration code", "Registration codes",
    "Registration codes: issue, rotate, revoke, list.", RegistrationCode,
    tag="registration codes", title="Code", cli_aliases=("codes",),
    fields=(
        out_field("code", str, "Code", list_column=True,
                  console=ConsoleSpec(copyable=True)),
        out_field("directory", str, "Directory", column="directory_id", list_column=True),
        out_field("state", str, "State", "active, rotated or revoked.", list_column=True),
        time_field("created_at", "Issued", "When the code was issued.",
                   console=ConsoleSpec(column=True)),
        time_field("rotated_at", "Rotated", "When it was rotated."),
        time_field("revoked_at", "Revoked", "When it was revoked."),
    ),
    operations=(
        Operation("list", "GET", "/registration-codes", READ,
                  lambda s, ctx, c: list_rows(CODES, s, ctx, c),
                  "List registration codes with their state.", out="page", errors=DIR_404,
                  filters=(directory_filter(RegistrationCode, "Only this directory's codes."),
                           Filter("state", "active, rotated or revoked.",
                                  choices=kinds.values(kinds.CodeState),
                                  column=RegistrationCode.state))),
        Operation("issue", "POST", f"{DIRECTORY_PATH}/registration-codes", WRITE,
                  lambda s, ctx, c: issue_codes(s, ctx, c.path["directory_id"], c.body["count"],
                                                c.actor),
                  "Issue registration codes.", status=201, body="params", out="items",
                  params=(Field("count", int, "How many", "How many codes to issue.", default=1,
                                limits={"ge": 1, "le": 100}),), params_model="CodeIssue",
                  errors=DIR_404, audit="registration_code.issue"),
        Operation("rotate", "POST", "/registration-codes/rotate", WRITE,
                  lambda s, ctx, c: rotate_code(s, ctx, c.body["code"], c.actor),
                  "Rotate a code: a successor is issued; the old one works for the grace period.",
                  status=201, body="params", params=(_CODE_PARAM,), params_model="CodeRef",
                  errors=(Code.VALIDATION_FAILED, Code.RESOURCE_NOT_FOUND, Code.CONFLICT),
                  audit="registration_code.rotate", message="new registration code: {code}"),
        Operation("revoke", "POST", "/registration-codes/revoke", WRITE,
                  lambda s, ctx, c: revoke_code(s, ctx, c.body["code"], c.actor),
                  "Revoke a code at once.", body="params", params=(_CODE_PARAM,),
                  params_model="CodeRef", errors=(Code.VALIDATION_FAILED, Code.RESOURCE_NOT_FOUND),
                  audit="registration_code.revoke", message="registration code {code} revoked"),
    ),
)
