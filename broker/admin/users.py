"""Users of a directory (the broker's own; an LDAP directory's live in its server): create,
change (password, certmap attributes, disabled), delete, list."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from broker.admin.common import (
    DIR_404,
    DIRECTORY_PATH,
    READ,
    WRITE,
    list_rows,
    search,
)
from broker.admin.fields import (
    FINGERPRINT_PATTERN,
    CliSpec,
    Field,
    out_field,
    time_field,
)
from broker.admin.framework import Call, Operation, Resource
from broker.admin.pagination import Filter, Page
from broker.codes import Code
from broker.service import audit
from broker.service.errors import ServiceError
from broker.service.lookups import get_directory_row, get_user_row
from broker.service.passwords import hash_password
from broker.store.models import Directory, User

USER_PATH = f"{DIRECTORY_PATH}/users/{{username}}"


def set_password(d: Directory, u: User, password: str | None) -> None:
    if password is None:
        u.password_hash = None
        return
    if not d.password_login:
        raise ServiceError(Code.VALIDATION_FAILED,
                           f"Directory {d.id!r} has password login off; a password cannot be set.",
                           {"field": "password"})
    u.password_hash = hash_password(password)


def user_values(data: Mapping[str, Any]) -> dict[str, Any]:
    """Column values of a user body or file entry (username and password aside)."""
    values = USERS.values(data, [f for f in USERS.fields if f.name not in ("username",
                                                                            "password")])
    if values.get("cert_fingerprint"):
        values["cert_fingerprint"] = values["cert_fingerprint"].lower()
    return values


def list_users(session: Session, directory_id: str, page: Page, *,
               disabled: bool | None = None) -> dict[str, Any]:
    return list_rows(USERS, session, None, Call("", {"directory_id": directory_id},
                                                filters={"disabled": disabled}, page=page))


def get_user(session: Session, directory_id: str, username: str) -> dict[str, Any]:
    return USERS.view(get_user_row(session, directory_id, username))


def create_user(session: Session, directory_id: str, fields: Mapping[str, Any],
                actor: str) -> dict[str, Any]:
    d = get_directory_row(session, directory_id)
    if d.ldap_url:
        raise ServiceError(Code.VALIDATION_FAILED, f"The users of directory {directory_id!r} "
                           "live in its LDAP server; create them there.",
                           {"field": "username"})
    data = USERS.validate(fields)
    username = data["username"]
    if session.scalar(select(User.id).where(User.directory_id == directory_id,
                                            User.username == username)) is not None:
        raise ServiceError(Code.CONFLICT, f"Directory {directory_id!r} already has a user "
                           f"{username!r}.", {"username": username})
    u = User(directory_id=directory_id, username=username, **user_values(data))
    if data.get("password") is not None:
        set_password(d, u, data["password"])
    session.add(u)
    session.flush()
    audit.insert(session, "user.create", "change", directory_id=directory_id, username=username,
                 actor=actor, with_password=u.password_hash is not None)
    return USERS.view(u)


def update_user(session: Session, directory_id: str, username: str, fields: Mapping[str, Any],
                actor: str) -> dict[str, Any]:
    u = get_user_row(session, directory_id, username)
    if u.directory.ldap_url:  # a name row (README "The name row"): nothing here to change
        raise ServiceError(Code.VALIDATION_FAILED, f"The users of directory {directory_id!r} "
                           "live in its LDAP server; change them there.",
                           {"field": next(iter(fields), "username")})
    data = USERS.validate(fields, update=True)
    changed = USERS.assign(u, user_values(data))
    if "password" in data:
        set_password(u.directory, u, data["password"])
        changed.append("password")
    if changed:
        session.flush()
        audit.insert(session, "user.update", "change", directory_id=directory_id,
                     username=username, actor=actor, fields=changed)
    return USERS.view(u)


def delete_user(session: Session, directory_id: str, username: str, actor: str) -> None:
    u = get_user_row(session, directory_id, username)
    session.execute(delete(User).where(User.id == u.id))
    session.expunge(u)
    audit.insert(session, "user.delete", "change", directory_id=directory_id, username=username,
                 actor=actor)


USERS: Resource = Resource(
    "users", "user", "Users", "Users of a directory.", User, tag="users",
    fields=(
        out_field("directory", str, "Directory", column="directory_id"),
        Field("username", str, "Username", "The user's name in the directory.", update=False,
              list_column=True, cli=CliSpec(positional=True),
              limits={"min_length": 1, "max_length": 200}),
        Field("upn", str, "UPN", "User principal name (certmap rule upn).", nullable=True,
              default=None, list_column=True, limits={"max_length": 320}),
        Field("email", str, "Email", "Email address (certmap rule email).", nullable=True,
              default=None, list_column=True, limits={"max_length": 320}),
        Field("subject", str, "Certificate subject", "Subject DN (certmap rule subject).",
              nullable=True, default=None, limits={"max_length": 2000}),
        Field("cert_fingerprint", str, "Certificate fingerprint",
              "SHA-256 of the user's certificate, hex (certmap rule fingerprint).",
              nullable=True, default=None, list_column=True,
              limits={"pattern": FINGERPRINT_PATTERN}),
        Field("password", str, "Password", "Password (needs password login); stored as a "
              "scrypt hash.", nullable=True, default=None, output=False,
              limits={"min_length": 1, "max_length": 1024},
              cli=CliSpec(name="password-stdin", input="stdin")),
        Field("password_hash", str, "Password hash", "A scrypt hash (files only).",
              nullable=True, default=None, output=False, in_api=False, update=False,
              limits={"pattern": r"^scrypt\$"}),
        out_field("has_password", bool, "Has password", list_column=True,
             read=lambda u, ctx: u.password_hash is not None),
        Field("disabled", bool, "Disabled", "A disabled user cannot log in.", default=False,
              list_column=True, cli=CliSpec(off="enabled")),
        time_field("created_at", "Created", "When the user was created."),
    ),
    operations=(
        Operation("list", "GET", f"{DIRECTORY_PATH}/users", READ,
                  lambda s, ctx, c: list_rows(USERS, s, ctx, c), "List users.",
                  out="page", errors=DIR_404,
                  filters=(Filter("disabled", "Only disabled (true) or enabled (false) users.",
                                  type=bool, column=User.disabled),
                           Filter("search", "Usernames, UPNs or emails containing this text.",
                                  where=search(User.username, User.upn, User.email)))),
        Operation("create", "POST", f"{DIRECTORY_PATH}/users", WRITE,
                  lambda s, ctx, c: create_user(s, c.path["directory_id"], c.body, c.actor),
                  "Create a user.", status=201, body="create",
                  errors=(*DIR_404, Code.CONFLICT, Code.VALIDATION_FAILED), audit="user.create",
                  message="user {username} created in {directory}"),
        Operation("get", "GET", USER_PATH, READ,
                  lambda s, ctx, c: get_user(s, c.path["directory_id"], c.path["username"]),
                  "Get a user.", errors=(*DIR_404, Code.RESOURCE_NOT_FOUND)),
        Operation("update", "PATCH", USER_PATH, WRITE,
                  lambda s, ctx, c: update_user(s, c.path["directory_id"], c.path["username"],
                                                c.body, c.actor),
                  "Change a user (null clears upn, email, subject, cert_fingerprint, password).",
                  body="update", errors=(*DIR_404, Code.RESOURCE_NOT_FOUND, Code.VALIDATION_FAILED),
                  audit="user.update", message="user {username} updated"),
        Operation("delete", "DELETE", USER_PATH, WRITE,
                  lambda s, ctx, c: delete_user(s, c.path["directory_id"], c.path["username"],
                                                c.actor),
                  "Delete a user and their WorkSpaces.", status=204, out=None,
                  errors=(*DIR_404, Code.RESOURCE_NOT_FOUND), audit="user.delete",
                  message="user {username} deleted from {directory_id}"),
    ),
)
