"""Lists of the admin API: a :class:`Page` (limit with an opaque cursor or an offset), the
declared list :class:`Filter` s, and one query that narrows, orders and pages."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import Session

from broker.codes import Code
from broker.service.errors import ServiceError

MAX_LIMIT = 500
DEFAULT_LIMIT = 50


@dataclass(frozen=True, eq=False)
class Filter:
    """A query parameter of a list operation (and the CLI option of the same name)."""

    name: str
    help: str
    type: type = str
    choices: tuple[str, ...] = ()
    #: ORM attribute compared for equality; or ``where`` for anything else.
    column: Any = None
    where: Callable[[Select[Any], Any], Select[Any]] | None = None
    cli: str | None = None

    def apply(self, stmt: Select[Any], value: Any) -> Select[Any]:
        if self.where is not None:
            return self.where(stmt, value)
        return stmt.where(self.column == value)


@dataclass(frozen=True)
class Page:
    """Which slice of a list: ``limit`` rows after ``cursor`` (opaque) or from ``offset``."""

    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    offset: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ServiceError(Code.MALFORMED_REQUEST, f"limit must be 1 to {MAX_LIMIT}")
        if self.offset is not None and self.offset < 0:
            raise ServiceError(Code.MALFORMED_REQUEST, "offset must not be negative")
        if self.offset is not None and self.cursor is not None:
            raise ServiceError(Code.MALFORMED_REQUEST, "give cursor or offset, not both")


def _encode_cursor(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps([key]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        (key,) = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise ServiceError(Code.MALFORMED_REQUEST,
                           "the cursor is not one this API issued") from None
    if not isinstance(key, int | str):
        raise ServiceError(Code.MALFORMED_REQUEST, "the cursor is not one this API issued")
    return key


def paginate(session: Session, stmt: Select[Any], key: Any, page: Page,
             view: Callable[[Any], dict[str, Any]], *, descending: bool = False
             ) -> dict[str, Any]:
    """``{"items": [...], "next_cursor": str | None}`` ordered by ``key``."""
    if page.cursor is not None:
        after = _decode_cursor(page.cursor)
        stmt = stmt.where(key < after if descending else key > after)
    stmt = stmt.order_by(key.desc() if descending else key.asc())
    if page.offset:
        stmt = stmt.offset(page.offset)
    rows = list(session.scalars(stmt.limit(page.limit + 1)))
    more = len(rows) > page.limit
    rows = rows[:page.limit]
    next_cursor = None
    if more and rows:
        next_cursor = _encode_cursor(getattr(rows[-1], key.key))
    return {"items": [view(r) for r in rows], "next_cursor": next_cursor}


def filtered(stmt: Select[Any], filters: tuple[Filter, ...], values: Mapping[str, Any]
             ) -> Select[Any]:
    """``stmt`` narrowed by every filter given a value (None and "" mean not given).

    A filter with choices takes one of them (case-insensitive, as everywhere in the admin
    surface) and refuses anything else with validation_failed: a closed-set column cannot even
    be compared with a value outside its set."""
    for flt in filters:
        value = values.get(flt.name)
        if value is not None and value != "":
            if flt.choices:
                value = _choice(flt, value)
            stmt = flt.apply(stmt, value)
    return stmt


def _choice(flt: Filter, value: Any) -> str:
    for choice in flt.choices:
        if isinstance(value, str) and value.strip().lower() == choice.lower():
            return choice
    raise ServiceError(Code.VALIDATION_FAILED,
                       f"Invalid: {flt.name}: must be one of {', '.join(flt.choices)}.",
                       {"fields": [flt.name], "field": flt.name})
