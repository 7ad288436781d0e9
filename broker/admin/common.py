"""What every admin resource module shares: the region check, the generic list use case and
the building blocks of list filters (row lookups: :mod:`broker.service.lookups`)."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from broker.admin.framework import Call, Resource
from broker.admin.pagination import Filter, filtered, paginate
from broker.codes import Code
from broker.kinds import Scope
from broker.pki.errors import PkiError
from broker.service import audit
from broker.service.errors import ServiceError
from broker.service.lookups import get_directory_row
from broker.store.models import TrustCertificate, User

if TYPE_CHECKING:
    from broker.service.context import BrokerContext

READ, WRITE = Scope.READ, Scope.WRITE
DIRECTORY_PATH = "/directories/{directory_id}"
#: The error of every operation below a directory's path.
DIR_404 = (Code.DIRECTORY_UNKNOWN,)


def region_suggestion(region: str, known: Any) -> str:
    """" (did you mean 'us-gov-west-1'?)" for a near miss of a catalogue region, else ""."""
    close = difflib.get_close_matches(region.lower(), list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_region(ctx: BrokerContext, region: str) -> None:
    if region not in ctx.catalogue:
        raise ServiceError(Code.VALIDATION_FAILED,
                           f"Region {region!r} is not in the region catalogue"
                           f"{region_suggestion(region, ctx.catalogue.region_ids())}.",
                           {"field": "region", "region": region})


# --------------------------------------------------------------------------- lists

def list_rows(resource: Resource, session: Session, ctx: Any, call: Call) -> dict[str, Any]:
    """One page of ``resource`` narrowed by the call's filters (and parent directory)."""
    model = resource.model
    key = getattr(model, resource.order_by)
    stmt: Select[Any] = select(model)
    if "directory_id" in call.path:
        get_directory_row(session, call.path["directory_id"])
        stmt = stmt.where(model.directory_id == call.path["directory_id"])  # type: ignore[attr-defined]
    op = resource.operation("list")
    stmt = filtered(stmt, op.filters, call.filters)
    return paginate(session, stmt, key, call.page, lambda r: resource.view(r, ctx),
                    descending=resource.newest_first)


def by_username_of(model: Any) -> Any:
    """A filter condition: rows of ``model`` whose user has this username."""
    def where(stmt: Select[Any], value: Any) -> Select[Any]:
        return stmt.join(User, User.id == model.user_id).where(User.username == value)
    return where


def search(*columns: Any) -> Any:
    """A filter matching rows where any of ``columns`` contains the text (case-insensitive)."""
    def where(stmt: Select[Any], value: Any) -> Select[Any]:
        needle = str(value).lower()
        return stmt.where(or_(*(func.lower(c).contains(needle, autoescape=True)
                                for c in columns)))
    return where


def directory_filter(model: Any, help: str) -> Filter:
    """The ``directory`` filter of a list that spans directories."""
    return Filter("directory", help, column=model.directory_id)


@contextmanager
def refused_as_service_error() -> Iterator[None]:
    """A PKI refusal (an unreadable upload, a CA the profile refuses) as the admin's
    ServiceError: same code, sentence and details."""
    try:
        yield
    except PkiError as exc:
        raise ServiceError(exc.code, exc.message, exc.details) from None


def remove_by_fingerprint(model: Any, what: str, audit_kind: str, audit_key: str
                          ) -> Any:
    """The use case that removes a trust certificate or CRL of a directory by fingerprint."""

    def run(session: Session, ctx: Any, call: Call) -> None:
        directory_id, fingerprint = call.path["directory_id"], call.path["fingerprint"]
        get_directory_row(session, directory_id)
        row = session.scalar(select(model).where(model.directory_id == directory_id,
                                                 model.fingerprint == fingerprint.lower()))
        if row is None:
            raise ServiceError(Code.RESOURCE_NOT_FOUND, f"The directory has no such {what}.",
                               {"fingerprint": fingerprint})
        session.delete(row)
        details = {audit_key: row.fingerprint}
        if model is TrustCertificate:
            details["trust_kind"] = row.kind
        audit.insert(session, audit_kind, "change", directory_id=directory_id,
                     actor=call.actor, **details)
    return run
