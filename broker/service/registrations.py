"""Registration: a code names a directory; the answer says which login methods it offers.

"Insert your smart card" (login method ``smart_card``) is offered only when the pure policy
allows pre-session smart-card login for this region, directory and client, so no later step
refuses it for a reason already known here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

import broker.policy as policy
import broker.registration as registration
from broker.codes import Code
from broker.errors import BrokerError
from broker.kinds import CodeState
from broker.service import audit
from broker.service.context import BrokerContext
from broker.service.errors import ServiceError
from broker.store.models import Directory, RegistrationCode, utcnow
from broker.store.statements import CODE_AND_DIRECTORY


@dataclass(frozen=True)
class ClientSpec:
    platform: str
    arch: str
    version: str

    def info(self) -> policy.ClientInfo:
        return policy.ClientInfo(platform=self.platform, arch=self.arch, version=self.version)

    def record(self) -> dict[str, str]:
        """As stored with a login and its sessions (see :func:`broker.policy.client_of`)."""
        return {"platform": self.platform, "arch": self.arch, "version": self.version}


class Toggles(Protocol):
    """A row carrying a directory's login toggles."""

    sc_pre_session: bool
    sc_in_session: bool
    password_login: bool


class CodeRow(Toggles, Protocol):
    """What :func:`lookup_code` reads (:data:`broker.store.statements.CODE_AND_DIRECTORY`)."""

    id: int
    state: CodeState
    revoked_at: datetime | None
    rotated_at: datetime | None
    directory_id: str
    name: str
    region: str
    version: int
    ldap_url: str | None
    address_locked_until: datetime | None


def code_settings(row: Toggles) -> policy.DirectorySettings:
    """The login toggles of a directory (or of a code, WorkSpace or session row read with
    its directory)."""
    return policy.DirectorySettings(pre_session=row.sc_pre_session,
                                    in_session=row.sc_in_session,
                                    password_login=row.password_login)


def _refuse_unusable(ctx: BrokerContext, state: str, revoked_at: datetime | None,
                     rotated_at: datetime | None, now: datetime) -> None:
    grace = timedelta(seconds=ctx.settings.registration.rotation_grace_s)
    if registration.is_usable(state, revoked_at, rotated_at, grace, now) != "ok":
        raise ServiceError(Code.REGISTRATION_CODE_REVOKED,
                           "This registration code is no longer valid. Ask your WorkSpaces "
                           "administrator for a new one.")


def lookup_code(ctx: BrokerContext, conn: Connection, text: str, now: datetime, *,
                address_key: str | None = None) -> CodeRow:
    """The usable registration code with its directory, in one read: the directory's login
    settings, LDAP URL and version, and the lock (``address_locked_until``) of
    ``address_key``.

    Raises registration_code_malformed (typo: bad shape or check character),
    registration_code_unknown (well-formed, never issued, or its directory deleted) or
    registration_code_revoked (revoked, or rotated and past the grace period)."""
    parsed = registration.parse(text, ctx.catalogue)
    row = conn.execute(CODE_AND_DIRECTORY, {"code": parsed.lookup_key,
                                            "address_key": address_key}).first()
    if row is None:  # never issued, or its directory was deleted while this call ran
        raise ServiceError(Code.REGISTRATION_CODE_UNKNOWN,
                           "This registration code is not known. Check it with your "
                           "WorkSpaces administrator.")
    code = cast(CodeRow, row)
    _refuse_unusable(ctx, code.state, code.revoked_at, code.rotated_at, now)
    return code


def register(ctx: BrokerContext, code: str, client: ClientSpec,
             client_address: str | None = None) -> dict[str, Any]:
    """The answer to POST /v1/registrations."""

    def work(conn: Connection) -> dict[str, Any]:
        d = lookup_code(ctx, conn, code, ctx.now())
        region = ctx.catalogue.get(d.region)
        offer = policy.login_methods(region, code_settings(d), client.info())
        audit.insert(conn, "registration", "success", directory_id=d.directory_id,
                     client_address=client_address, methods=list(offer.methods),
                     platform=client.platform[:32], version=client.version[:32])
        return {
            "directory": {"id": d.directory_id, "name": d.name},
            "region": d.region,
            "login_methods": list(offer.methods),
            "smart_card": {
                "pre_session": offer.pre_session.allowed,
                "in_session": offer.in_session.allowed,
                "reasons": [str(r.value) for r in offer.pre_session.reasons],
                "in_session_reasons": [str(r.value) for r in offer.in_session.reasons],
            },
        }

    try:
        return ctx.db.run(work)
    except BrokerError as exc:
        # The refusal is audited in its own transaction: the failed one was rolled back.
        reason = exc.code
        ctx.db.run(lambda c: audit.insert(c, "registration", "refused", reason=reason,
                                          client_address=client_address),
                   name="audit_refused_registration")
        raise


# --------------------------------------------------------------------------- admin operations

def issue_code(ctx: BrokerContext, session: Session, directory_id: str, actor: str) -> str:
    d = session.get(Directory, directory_id)
    if d is None:
        raise ServiceError(Code.DIRECTORY_UNKNOWN, f"no directory {directory_id!r}")
    code = str(registration.generate(ctx.catalogue.get(d.region).prefix)).upper()
    session.add(RegistrationCode(code=code, directory_id=d.id, state=CodeState.ACTIVE,
                                 created_at=utcnow()))
    audit.insert(session, "registration_code.issue", "change", directory_id=d.id, actor=actor,
                 code_suffix=code[-4:])
    return code


def _code_row(ctx: BrokerContext, session: Session, text: str) -> RegistrationCode:
    parsed = registration.parse(text, ctx.catalogue)
    row = session.scalar(select(RegistrationCode).where(RegistrationCode.code ==
                                                        parsed.lookup_key))
    if row is None:
        raise ServiceError(Code.RESOURCE_NOT_FOUND, "no such registration code")
    return row


def rotate_code(ctx: BrokerContext, session: Session, text: str, actor: str) -> str:
    """Issue a successor; the old code keeps working for registration.rotation_grace_s."""
    row = _code_row(ctx, session, text)
    if row.state != CodeState.ACTIVE:
        raise ServiceError(Code.CONFLICT, f"the code is {row.state}, not active")
    row.state, row.rotated_at = CodeState.ROTATED, ctx.now()
    new = issue_code(ctx, session, row.directory_id, actor)
    audit.insert(session, "registration_code.rotate", "change", directory_id=row.directory_id,
                 actor=actor, code_suffix=row.code[-4:], successor_suffix=new[-4:])
    return new


def revoke_code(ctx: BrokerContext, session: Session, text: str, actor: str) -> None:
    row = _code_row(ctx, session, text)
    if row.state != CodeState.REVOKED:
        row.state, row.revoked_at = CodeState.REVOKED, ctx.now()
        audit.insert(session, "registration_code.revoke", "change",
                     directory_id=row.directory_id, actor=actor, code_suffix=row.code[-4:])
