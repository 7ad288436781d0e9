"""The console's forms and lists from the resource declarations: a declared field as a form
control, a submitted form as the operation's API body, a listed row's values and path, and the
success message of a change (see :mod:`broker.web.console`)."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from broker.admin.fields import REQUIRED, Field
from broker.admin.framework import Operation, Resource
from broker.codes import Code
from broker.errors import BrokerError
from broker.service.errors import ServiceError

PREFIX = "/console"


class ConsoleRefused(BrokerError):
    """A console request refused before its handler: no session, bad CSRF token, read scope."""

    code = Code.ADMIN_TOKEN_INVALID


# --------------------------------------------------------------------------- forms from fields

def form_values(request: Any) -> dict[str, list[bytes]]:
    return {k.decode("utf-8", "replace"): list(v) for k, v in (request.args or {}).items()}


def body_form(request: Any) -> dict[str, list[bytes]]:
    """The fields of a form POST's body only (``request.args`` mixes in the query string)."""
    ctype = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if ctype != b"application/x-www-form-urlencoded" or request.content is None:
        return {}
    request.content.seek(0)
    raw = request.content.read()
    return {k.decode("utf-8", "replace"): list(v)
            for k, v in parse_qs(raw, keep_blank_values=True).items()}


def first(values: dict[str, list[bytes]], name: str) -> str:
    got = values.get(name)
    return got[0].decode("utf-8", "replace") if got else ""


def field_input(f: Field) -> str:
    """How a console form shows a declared field."""
    if f.cli.input in ("file", "file_b64"):
        return "file"
    if f.type is bool:
        return "checkbox"
    if f.is_list:
        return "list"
    if f.choices:
        return "select"
    if f.type is int:
        return "number"
    if f.output is False and f.name == "password":
        return "password"
    return "text"


def body_from_form(resource: Resource, op: Operation, values: dict[str, list[bytes]]
                   ) -> dict[str, Any]:
    """The operation's body from a submitted form, shaped as the API's JSON body (groups
    nested); the declared model then validates it exactly as for the API."""
    body: dict[str, Any] = {}
    update = op.body == "update"
    for f in resource.body_fields(op):
        kind = field_input(f)
        text = first(values, f.path).strip()
        value: Any
        if kind not in ("checkbox", "file") and f.path not in values:
            continue  # not on the form: the declared default (create) or unchanged (update)
        if kind == "checkbox":
            value = f.path in values
        elif kind == "file":
            parts = [text] if text else []
            for blob in values.get(f.path + "__file", []):
                if not blob:
                    continue
                try:
                    parts.append(blob.decode("ascii"))
                except UnicodeDecodeError:  # DER: the declared field takes base64
                    parts.append(base64.b64encode(blob).decode())
            if not parts:
                continue
            value = "\n".join(parts)
        elif kind == "list":
            value = [p for p in re.split(r"[,\s]+", text) if p]
        elif kind == "number":
            if not text:
                continue
            if not re.fullmatch(r"-?[0-9]{1,9}", text):
                raise ServiceError(Code.VALIDATION_FAILED, f"{f.label} must be a whole number.",
                                   {"field": f.path})
            value = int(text)
        elif not text:
            if not f.nullable or not f.output or not update:
                continue  # secrets stay as they are; creates take the declared default
            value = None
        else:
            value = text
        (body.setdefault(f.group, {}) if f.group else body)[f.name] = value
    return body


def default_of(f: Field) -> Any:
    """The declared default a create form starts from (None where the field is required)."""
    return None if f.default is REQUIRED else f.default


def set_cookie(request: Any, name: bytes, value: bytes, max_age: int) -> None:
    """A ``__Host-`` cookie: Secure, HttpOnly, SameSite=Strict, Path=/, expiring."""
    request.addCookie(name, value, path=b"/", secure=True, httpOnly=True, sameSite="strict",
                      max_age=str(max_age).encode())


def row_value(row: dict[str, Any], path: str) -> Any:
    group, _, name = path.rpartition(".")
    where = row.get(group, {}) if group else row
    value = where.get(name) if isinstance(where, dict) else None
    # A mapping setting (ldap.attributes) as the text its form accepts; a top-level mapping
    # (an audit event's details) stays a mapping: the list shows it as evidence.
    if group and isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return value


def typed_values(values: dict[str, Any]) -> Any:
    """A refused create form's values, as typed (for the form shown again)."""
    return lambda f: values.get(f.path)


def create_values(chosen: str) -> Any:
    """A create form's starting values: the selected directory where a field names one."""
    return lambda f: chosen if f.path == "directory" and chosen else None


def row_values(row: dict[str, Any]) -> Any:
    """An edit form's values: the row's."""
    return lambda f: row_value(row, f.path)


def row_path(op: Operation, row: dict[str, Any]) -> dict[str, str] | None:
    """Path parameters of ``op`` for one listed row, or None when the row cannot name them."""
    out = {}
    for p in op.path_params:
        for key in (p, p.removesuffix("_id"), "id"):
            if row.get(key) not in (None, ""):
                out[p] = str(row[key])
                break
        else:
            return None
    return out


def _filter_value(flt: Any, text: str) -> Any:
    if flt.type is bool:
        return text.lower() == "true"
    if flt.type is datetime:
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ServiceError(Code.VALIDATION_FAILED, f"{flt.name} must be a date and time.",
                               {"field": flt.name}) from None
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return text


def _return_to(back: str, default: str) -> str:
    """Where a form goes back to: a console path only (no other site, no scheme-relative)."""
    if not back.startswith(f"{PREFIX}/") or "//" in back or "\\" in back:
        return default
    return back


#: Success messages for operations that return a list, where the console words them itself.
LIST_DONE = {("registration-codes", "issue"): "{count} registration {codes} issued in "
                                             "{directory}: {names}"}


def _done(resource: Resource, op: Operation, result: Any, path: dict[str, str]) -> str:
    """The success message of a change; it names the directory the change happened in."""
    directory = path.get("directory_id") or ""
    if not directory and isinstance(result, dict) and isinstance(result.get("directory"), str):
        directory = result["directory"]
    if isinstance(result, list):
        first_column = resource.list_columns[0] if resource.list_columns else "id"
        names = ", ".join(str(row_value(r, first_column)) for r in result if isinstance(r, dict))
        template = LIST_DONE.get((resource.name, op.name))
        if template:
            return template.format(count=len(result), directory=directory, names=names,
                                   codes="code" if len(result) == 1 else "codes")
        text = f"{op.summary.rstrip('.')}: {names}"
    else:
        text = f"{op.summary.rstrip('.')}: done."
        if op.message:
            try:
                text = op.message.format(**{**(result if isinstance(result, dict) else {}),
                                            **path})
            except (KeyError, IndexError):
                pass
    if directory and resource.name != "directories" and directory not in text:
        text += f" (directory {directory})"
    return text
