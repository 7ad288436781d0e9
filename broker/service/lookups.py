"""Find a row by its key, or answer the stable code an admin sees when it is missing
(directory_unknown, resource_not_found, workspace_unknown). Used by the admin use cases, apply
and the console alike."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.codes import Code
from broker.service.errors import ServiceError
from broker.store.models import Directory, User, WorkSpace


def row_by_id(session: Session, model: type[Any], key: str, code: Code, what: str) -> Any:
    """The row of ``model`` with primary key ``key``, or ServiceError ``code`` (an id longer
    than any stored one is not looked up)."""
    row = session.get(model, key) if len(key) <= 64 else None
    if row is None:
        raise ServiceError(code, f"There is no {what} {key!r}.", {what.lower(): key})
    return row


def get_directory_row(session: Session, directory_id: str) -> Directory:
    row: Directory = row_by_id(session, Directory, directory_id, Code.DIRECTORY_UNKNOWN,
                               "directory")
    return row


def get_user_row(session: Session, directory_id: str, username: str) -> User:
    get_directory_row(session, directory_id)
    u = session.scalar(select(User).where(User.directory_id == directory_id,
                                          User.username == username))
    if u is None:
        raise ServiceError(Code.RESOURCE_NOT_FOUND,
                           f"Directory {directory_id!r} has no user {username!r}.",
                           {"directory": directory_id, "username": username})
    return u


def get_workspace_row(session: Session, workspace_id: str) -> WorkSpace:
    row: WorkSpace = row_by_id(session, WorkSpace, workspace_id, Code.WORKSPACE_UNKNOWN,
                               "WorkSpace")
    return row


def username_of(session: Session | None, user_id: int) -> str | None:
    u = session.get(User, user_id) if session is not None else None
    return u.username if u is not None else None
