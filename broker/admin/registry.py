"""Every admin resource, by its API/CLI name, in the order the CLI and console list them."""

from __future__ import annotations

from broker.admin.audit_events import AUDIT_EVENTS
from broker.admin.crls import CRLS
from broker.admin.directories import DIRECTORIES
from broker.admin.framework import Resource
from broker.admin.registration_codes import CODES
from broker.admin.sessions import SESSIONS
from broker.admin.trust import TRUST
from broker.admin.users import USERS
from broker.admin.workspaces import WORKSPACES

RESOURCES: dict[str, Resource] = {r.name: r for r in (
    DIRECTORIES, TRUST, CRLS, USERS, WORKSPACES, CODES, SESSIONS, AUDIT_EVENTS)}
