"""The console's pages and the data each one shows: which declared resources a page lists,
and its sections (list, filters, paging, forms, row actions) in the selected directory."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.orm import Session

from broker.admin.framework import Call, Resource
from broker.admin.pagination import Page
from broker.admin.registry import RESOURCES
from broker.errors import BrokerError
from broker.kinds import Scope
from broker.service import console
from broker.service.context import BrokerContext
from broker.web.console_forms import ConsoleRefused, _filter_value, first, row_path

PAGE_SIZE = 25
#: How many of a directory's users the WorkSpace owner picker offers as a list; past it (or
#: for an LDAP-backed directory, whose users live on its server) the owner is typed, with the
#: known names suggested and a link to look one up.
OWNER_CHOICES = 500

@dataclass(frozen=True)
class ConsolePage:
    """One page of the console: which declared resources it shows."""

    slug: str
    title: str
    resources: tuple[str, ...]
    #: Refresh its lists every few seconds (states and sessions change on their own).
    live: bool = False
    #: Filters the page always applies (not offered on its filter form).
    fixed: tuple[tuple[str, str], ...] = ()
    #: The columns it shows (field paths, in order); empty: the resource's console columns.
    columns: tuple[str, ...] = ()
    #: What the page says above its list, for the page's resource (the declared help is the
    #: CLI's and stays the fallback).
    intro: str = ""


#: Every kind of audit event that records a login decision: broker login (card, password), the
#: card logon at a WorkSpace's start, in-session card use.
LOGIN_KINDS = "login.*,logon.*,in_session.auth"
#: The login decisions page: refused-login evidence first (who, from where, which certificate,
#: which certmap rule) — the audit events of logins with their evidence columns.
LOGINS = ConsolePage(
    "logins", "Login decisions", ("audit-events",), fixed=(("kind", LOGIN_KINDS),),
    columns=("at", "kind", "outcome", "reason", "directory", "username", "client_address",
             "subject", "upn", "cert_fingerprint", "certmap_rule", "details"),
    intro="Every login decision with the evidence it rests on: the address the client came "
          "from, the card certificate's subject, UPN and fingerprint, and the certmap rule that "
          "matched a user (or the rules tried when none did). Show the refusals only to see who "
          "was turned away and why; the details say which check failed.")


PAGES = (
    ConsolePage("directories", "Directories", ("directories",)),
    ConsolePage("trust", "Trust", ("trust", "crls")),
    ConsolePage("users", "Users", ("users",)),
    ConsolePage("workspaces", "WorkSpaces", ("workspaces",), live=True),
    ConsolePage("registration-codes", "Registration codes", ("registration-codes",)),
    ConsolePage("sessions", "Sessions", ("sessions",), live=True),
    LOGINS,
    ConsolePage("audit", "Audit log", ("audit-events",)),
)
#: What each list's section says, written for the console (a resource's declared help is
#: the CLI's wording).
INTROS = {
    "directories": "A directory holds one organisation's users, their WorkSpaces and the CAs "
                   "their cards chain to. Choose one at the top: every page then works in it.",
    "trust": "The CA certificates this directory trusts: the root its cards chain to (trust "
             "anchor) and the issuing CAs below it.",
    "crls": "Revocation lists of this directory's CAs. With hard fail, a CA without a current "
            "CRL (or OCSP) refuses every card it issued.",
    "users": "The people who may sign in with this directory, and what of their card "
             "certificate identifies them.",
    "workspaces": "The desktops of this directory. Smart-card login needs a WorkSpace streamed "
                  "over WSP; a PCoIP one takes passwords only.",
    "registration-codes": "A card user types a registration code into the WorkSpaces client "
                          "once; it tells the client which directory to sign in to.",
    "sessions": "Desktops in use now. Ending a session disconnects its user at the next "
                "heartbeat.",
    "audit-events": "Every admin change and every login decision, newest first.",
}
#: The title of each form that adds something, written for the page.
FORM_TITLES = {
    ("directories", "create"): "New directory",
    ("trust", "add"): "Add CA certificates (PEM files or pasted)",
    ("crls", "add"): "Upload a CRL",
    ("users", "create"): "New user",
    ("workspaces", "create"): "New WorkSpace",
    ("registration-codes", "issue"): "Issue registration codes",
}
#: The directory form's certificate-path options of RFC 5280 that most directories leave at
#: their defaults: shown collapsed (opened when one of them differs from its default).
ADVANCED_PKI = ("required_eku", "required_policies", "explicit_policy",
                "policy_mapping_inhibit", "any_policy_inhibit", "max_chain_depth",
                "aia_fetch", "accept_noncritical_constraints")
#: Form fields the console offers as a picker of the directory's users.
OWNER_FIELDS = {("workspaces", "user")}

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
        paged search, see :func:`broker.admin.ldap_users.browse_users`); None elsewhere."""
        from broker.admin.ldap_users import browse_users

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
            resource = RESOURCES[name]
            list_op = resource.operation("list")
            path = {p: chosen for p in list_op.path_params}
            filters, shown = {}, {}
            fixed = dict(page.fixed)
            for flt in list_op.filters:
                if flt.name in fixed:
                    filters[flt.name] = _filter_value(flt, fixed[flt.name])
                    continue
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
            columns = resource.console_columns
            if page.columns:
                by_path = {f.path: f for f in resource.fields if f.output}
                columns = [by_path[c] for c in page.columns]
            out.append({
                "resource": resource, "list_op": list_op, "rows": rows["items"],
                "columns": columns,
                "filters": [f for f in list_op.filters if f.name not in fixed],
                "intro": page.intro or INTROS.get(name, resource.help),
                "owners": (owner_choices(session, chosen)
                           if name == "workspaces" and chosen else None),
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
    return RESOURCES[name]


def owner_choices(session: Session, directory_id: str) -> dict[str, Any] | None:
    """The WorkSpace owner picker of ``directory_id``: its users' names, and whether they are
    the whole list (a local directory with up to OWNER_CHOICES users) or suggestions (an LDAP
    directory's users already known to the broker; the rest are found on its server)."""
    from sqlalchemy import select

    from broker.store.models import Directory, User

    directory = session.get(Directory, directory_id)
    if directory is None:
        return None
    names = list(session.scalars(
        select(User.username).where(User.directory_id == directory_id)
        .order_by(User.username).limit(OWNER_CHOICES + 1)))
    ldap = bool(directory.ldap_url)
    return {"directory": directory_id, "users": names[:OWNER_CHOICES], "ldap": ldap,
            "complete": not ldap and len(names) <= OWNER_CHOICES}
