"""The console's pages and the data each one shows: which declared resources a page lists,
and its sections (list, filters, paging, forms, row actions) in the selected directory."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.orm import Session

from broker.errors import BrokerError
from broker.kinds import Scope
from broker.service import admin, console
from broker.service.context import BrokerContext
from broker.service.resources import Call, Page, Resource
from broker.web.console_forms import ConsoleRefused, _filter_value, first, row_path

PAGE_SIZE = 25



@dataclass(frozen=True)
class ConsolePage:
    """One page of the console: which declared resources it shows."""

    slug: str
    title: str
    resources: tuple[str, ...]
    #: Refresh its lists every few seconds (states and sessions change on their own).
    live: bool = False


PAGES = (
    ConsolePage("directories", "Directories", ("directories",)),
    ConsolePage("trust", "Trust", ("trust", "crls")),
    ConsolePage("users", "Users", ("users",)),
    ConsolePage("workspaces", "WorkSpaces", ("workspaces",), live=True),
    ConsolePage("registration-codes", "Registration codes", ("registration-codes",)),
    ConsolePage("sessions", "Sessions", ("sessions",), live=True),
    ConsolePage("audit", "Audit log", ("audit-events",)),
)
PAGES_BY_SLUG = {p.slug: p for p in PAGES}
#: Lists that start at every directory, not the selected one: the audit log also holds events
#: of no directory (sign-ins, admin tokens); its directory filter still narrows it.
SITE_WIDE = frozenset({"audit-events"})
#: Row actions offered only in some states (the others show the button disabled, saying why).
ROW_OP_STATES = {("workspaces", "start"): ("STOPPED",), ("workspaces", "stop"): ("AVAILABLE",)}


class PageData:
    """What the console's pages read (mixed into :class:`broker.web.console.ConsoleApp`)."""

    ctx: BrokerContext

    async def follow_link(self, identity: console.ConsoleIdentity, wanted: str
                          ) -> console.ConsoleIdentity:
        """A link's ``?directory_id=`` (an existing directory) becomes the selected directory,
        so the header, every list and every form agree with the page the link opened."""
        if not wanted or wanted not in identity.directories or wanted == identity.directory_id:
            return identity
        await self.ctx.call(self.ctx.db.transaction,
                            lambda s: console.select_directory(s, identity, wanted))
        return dataclasses.replace(identity, directory_id=wanted)

    async def ldap_users(self, page: ConsolePage, sections: list[dict[str, Any]],
                         args: dict[str, list[bytes]]) -> dict[str, Any] | None:
        """The users page of an LDAP-backed directory: read through its server (one bounded
        paged search, see :func:`broker.service.ldapdir.browse_users`); None elsewhere."""
        from broker.service.ldapdir import browse_users

        if page.slug != "users" or not sections or not sections[0]["chosen"]:
            return None
        chosen = sections[0]["chosen"]
        try:
            found: dict[str, Any] | None = await self.ctx.call(
                browse_users, self.ctx, chosen, first(args, "search").strip())
        except BrokerError as exc:
            return {"directory_id": chosen, "items": [], "problem": exc.message}
        return None if found is None else {"directory_id": chosen, **found}

    def notes(self, page: ConsolePage) -> dict[str, Any]:
        """Per region, what the policy says next to each smart-card toggle."""
        if "directories" not in page.resources:
            return {}
        return console.directory_notes(self.ctx.catalogue)

    def sections(self, session: Session, page: ConsolePage, args: dict[str, list[bytes]],
                 chosen: str) -> list[dict[str, Any]]:
        """One section per resource of the page: list, filters, paging, forms, row actions,
        all in the ``chosen`` directory (a ``directory`` filter starts at it; "any" widens)."""
        directories = console.directory_ids(session)
        out = []
        for name in page.resources:
            resource = admin.RESOURCES[name]
            list_op = resource.operation("list")
            path = {p: chosen for p in list_op.path_params}
            filters, shown = {}, {}
            for flt in list_op.filters:
                text = first(args, flt.name).strip()
                if flt.name == "directory" and flt.name not in args and \
                        name not in SITE_WIDE:
                    text = chosen
                shown[flt.name] = text
                if text:
                    filters[flt.name] = _filter_value(flt, text)
            if name == "sessions" and "state" not in args:
                filters["state"] = shown["state"] = "live"
            cursor = first(args, f"cursor.{name}") or None
            rows: dict[str, Any] = {"items": [], "next_cursor": None}
            problem = None
            if list_op.path_params and not chosen:
                problem = "Create a directory first."
            else:
                try:
                    rows = list_op.run(session, self.ctx, Call(
                        "", path, {}, filters, Page(limit=PAGE_SIZE, cursor=cursor)))
                except BrokerError as exc:
                    problem = exc.message
            listed = {p for p in list_op.path_params}
            row_ops, collection_ops, edit_op = [], [], None
            out_names = {f.name for f in resource.fields if f.output}
            for op in resource.operations:
                if op.scope is not Scope.WRITE:
                    continue
                if op.body == "update":
                    edit_op = op
                elif op.body == "create":
                    collection_ops.append(op)
                elif set(op.path_params) - listed and all(p.name in out_names
                                                          for p in op.params):
                    row_ops.append(op)
                elif op.params and all(p.name in out_names for p in op.params):
                    row_ops.append(op)
                else:
                    collection_ops.append(op)
            next_args = {k: first(args, k) for k in args if not k.startswith("cursor.")}
            next_link = None
            if rows.get("next_cursor"):
                next_link = "?" + urlencode({**next_args,
                                             f"cursor.{name}": rows["next_cursor"]})
            out.append({
                "resource": resource, "list_op": list_op, "rows": rows["items"],
                "columns": resource.console_columns, "filters": list_op.filters,
                "filter_values": shown, "path": path, "chosen": chosen,
                "directories": directories, "problem": problem,
                "row_ops": row_ops, "collection_ops": collection_ops, "edit_op": edit_op,
                "next_link": next_link,
                "first_link": ("?" + urlencode(next_args)) if cursor else None,
                "row_path": row_path,
                "live": page.live,
            })
        return out


def _page(slug: str) -> ConsolePage:
    page = PAGES_BY_SLUG.get(slug)
    if page is None:
        raise ConsoleRefused(message=f"There is no console page {slug!r}.")
    return page


def _resource_of(page: ConsolePage, name: str) -> Resource:
    if name not in page.resources:
        raise ConsoleRefused(message="That resource is not on this page.")
    return admin.RESOURCES[name]
