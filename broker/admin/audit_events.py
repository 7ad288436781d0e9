"""Audit events: every admin change and every login decision, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_

from broker import kinds
from broker.admin.common import READ, directory_filter, list_rows
from broker.admin.fields import ConsoleSpec, out_field, time_field
from broker.admin.framework import Operation, Resource
from broker.admin.pagination import Filter
from broker.service import evidence
from broker.store.models import AuditEvent


def kind_filter(stmt: Select[Any], value: Any) -> Select[Any]:
    """One kind, a prefix ending in ``*``, or several of those joined by commas."""
    wanted = [v.strip() for v in str(value).split(",") if v.strip()] or [str(value)]
    return stmt.where(or_(*(AuditEvent.kind.startswith(v[:-1], autoescape=True)
                            if v.endswith("*") else AuditEvent.kind == v for v in wanted)))


AUDIT_EVENTS: Resource = Resource(
    "audit-events", "audit event", "Audit events", "Audit events: every admin change and "
    "every login decision.", AuditEvent, tag="audit", title="AuditEvent",
    cli_aliases=("audit",), newest_first=True,
    fields=(
        out_field("id", int, "ID", list_column=True),
        time_field("at", "At", "When it happened.", list_column=True),
        out_field("kind", str, "Event", list_column=True),
        out_field("outcome", str, "Outcome", "success, refused, error or change.",
             list_column=True),
        out_field("reason", str, "Reason", nullable=True, list_column=True),
        out_field("directory", str, "Directory", column="directory_id", nullable=True,
             list_column=True),
        out_field("username", str, "User", nullable=True, list_column=True),
        out_field("actor", str, "Actor", nullable=True, list_column=True),
        out_field("client_address", str, "Client address", nullable=True, list_column=True),
        out_field("subject", str, "Certificate subject", "The login's certificate subject.",
                  nullable=True, list_column=True, read=evidence.subject_of),
        out_field("upn", str, "UPN", "The UPN in the login's certificate.", nullable=True,
                  list_column=True, read=evidence.upn_of),
        out_field("cert_fingerprint", str, "Certificate fingerprint", nullable=True,
                  list_column=True),
        out_field("certmap_rule", str, "Certmap rule", "The certmap rule that decided (the "
                  "rules tried when none matched).", nullable=True, list_column=True,
                  read=evidence.certmap_rule_of),
        out_field("details", dict[str, Any], "Details", "What the decision rests on (revocation "
             "evidence among it).", nullable=True,
                  console=ConsoleSpec(column=True)),
    ),
    operations=(
        Operation("list", "GET", "/audit-events", READ,
                  lambda s, ctx, c: list_rows(AUDIT_EVENTS, s, ctx, c),
                  "Audit events, newest first (kind may end in * for a prefix; since/until are "
                  "ISO 8601 times).", out="page", filters=(
                      directory_filter(AuditEvent, "Only this directory's events."),
                      Filter("username", "Only events about this user.",
                             column=AuditEvent.username, cli="user"),
                      Filter("kind", "An event kind; end with * for a prefix (directory.*); "
                             "several separated by commas.", where=kind_filter),
                      Filter("outcome", "success, refused, error or change.",
                             choices=kinds.values(kinds.Outcome),
                             column=AuditEvent.outcome),
                      Filter("reason", "Only events with this reason code.",
                             column=AuditEvent.reason),
                      Filter("actor", "Only changes by this actor (token:NAME, cli:USER).",
                             column=AuditEvent.actor),
                      Filter("since", "ISO 8601 time (inclusive).", type=datetime,
                             where=lambda stmt, v: stmt.where(AuditEvent.at >= v)),
                      Filter("until", "ISO 8601 time (exclusive).", type=datetime,
                             where=lambda stmt, v: stmt.where(AuditEvent.at < v)))),
    ),
)
