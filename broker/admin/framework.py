"""Admin resources as data: one declaration per resource, everything else derived from it.

In the spirit of Django's ``ModelAdmin`` and Flask-Admin's ``ModelView``: a :class:`Resource`
lists its :class:`~broker.admin.fields.Field` s (type, label, help text, choices, limits,
default, where it may be set, how the CLI and console show it), its list
:class:`~broker.admin.pagination.Filter` s and its :class:`Operation` s (HTTP method and path,
the scope an admin token needs, the audit event, the error codes, the use case that runs). From
that one declaration come

* the strict pydantic models the admin API validates with and documents
  (:mod:`broker.admin.models`), which the CLI and apply validate with too;
* the JSON view of a row (:meth:`Resource.view`) and the column values of a body
  (:meth:`Resource.values`), so a field's name, group and column are written once;
* the admin API routes and OpenAPI document (``broker.web.admin_api``, ``broker.web.openapi``),
  the ``broker admin`` commands (``broker.admin_cli``), apply/export
  (``broker.service.directories``) and a console's list pages and forms (``describe()``).

Service layer: nothing here knows HTTP or click. The declarations live one module per resource
in this package; :data:`broker.admin.registry.RESOURCES` lists them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from broker.admin import models
from broker.admin.fields import REQUIRED, Field, Out, Strict, validation_error
from broker.admin.pagination import Filter, Page
from broker.codes import Code
from broker.kinds import Scope
from broker.service.errors import ServiceError


@dataclass
class Call:
    """One invocation of an operation, however it arrived (API request, CLI command)."""

    actor: str
    path: dict[str, str] = field(default_factory=dict)
    #: The body's fields as named by the caller (validated; nested groups as dicts).
    body: dict[str, Any] = field(default_factory=dict)
    filters: dict[str, Any] = field(default_factory=dict)
    page: Page = field(default_factory=Page)


@dataclass(frozen=True, eq=False)
class Operation:
    """One thing an admin can do to a resource."""

    name: str
    method: str
    #: Below /admin/v1, with {placeholders} for path parameters.
    path: str
    scope: Scope
    run: Callable[[Session, Any, Call], Any]
    summary: str
    status: int = 200
    #: "create" / "update": the resource's generated models; "params": a model from ``params``.
    body: Literal["create", "update", "params"] | None = None
    params: tuple[Field, ...] = ()
    params_model: str = ""
    #: "item", "items" ({"items": [...]}), "page" ({"items", "next_cursor"}) or None (204).
    out: Literal["item", "items", "page"] | None = "item"
    #: The error codes the use case raises (documented in OpenAPI beside the common ones).
    errors: tuple[Code, ...] = ()
    filters: tuple[Filter, ...] = ()
    #: The audit event kind the operation writes (None: it only reads).
    audit: str | None = None
    #: CLI: ask before running (unless --yes).
    confirm: str | None = None
    #: CLI: the line printed on success, formatted with the result and the path parameters.
    message: str = ""

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{([^}]+)}", self.path)

    @cached_property
    def parameters_model(self) -> type[BaseModel]:
        return models.params_model(self.params_model, self.params)


@dataclass(frozen=True, eq=False)
class Resource:
    """An admin resource: its fields and operations (see the module docstring)."""

    name: str
    singular: str
    label: str
    help: str
    model: type
    fields: tuple[Field, ...]
    operations: tuple[Operation, ...] = ()
    tag: str = ""
    cli_aliases: tuple[str, ...] = ()
    #: Model names: title + Create/Patch/Out/Page (default: the singular, capitalised).
    title: str = ""
    #: Lists are ordered by this column (and paged by it), newest first or not.
    order_by: str = "id"
    newest_first: bool = False

    # ------------------------------------------------------------------ fields

    def field(self, path: str) -> Field:
        for f in self.fields:
            if f.path == path:
                return f
        raise KeyError(path)

    def api_fields(self, *, create: bool = False, update: bool = False) -> list[Field]:
        return [f for f in self.fields if f.in_api and (not create or f.create)
                and (not update or f.update)]

    @property
    def list_columns(self) -> list[str]:
        return [f.path for f in self.fields if f.list_column]

    @property
    def console_columns(self) -> list[Field]:
        """The fields a console list shows (the CLI's columns and the wider ones)."""
        return [f for f in self.fields if f.output and (f.list_column or f.console.column)]

    def operation(self, name: str) -> Operation:
        for op in self.operations:
            if op.name == name:
                return op
        raise KeyError(name)

    # ------------------------------------------------------------------ models

    @property
    def _stem(self) -> str:
        return self.title or self.singular.title().replace(" ", "")

    @cached_property
    def create_model(self) -> type[BaseModel]:
        """The strict body of a create (required fields required, defaults declared)."""
        return models.fields_model(self._stem, "Create", self.api_fields(create=True),
                                   patch=False, base=Strict)

    @cached_property
    def patch_model(self) -> type[BaseModel]:
        """The strict body of an update: every updatable field optional."""
        return models.fields_model(self._stem, "Patch", self.api_fields(update=True),
                                   patch=True, base=Strict)

    @cached_property
    def out_model(self) -> type[BaseModel]:
        """What the API answers for one row (unknown keys forbidden, so views cannot drift)."""
        return models.fields_model(self._stem, "Out", [f for f in self.fields if f.output],
                                   patch=False, base=Out)

    def file_model(self, **extra: Any) -> type[BaseModel]:
        """The strict entry of a declarative file: the file's fields plus ``extra``."""
        model = models.fields_model(self._stem, "Spec",
                                    [f for f in self.fields if f.in_file and f.create],
                                    patch=False, base=Strict)
        return models.extended(model, **extra) if extra else model

    @cached_property
    def page_model(self) -> type[BaseModel]:
        return models.page_of(self.out_model)

    @cached_property
    def items_model(self) -> type[BaseModel]:
        return models.items_of(self.out_model)

    def response_model(self, op: Operation) -> type[BaseModel] | None:
        return {"item": self.out_model, "items": self.items_model, "page": self.page_model,
                None: None}[op.out]

    def body_model(self, op: Operation) -> type[BaseModel] | None:
        if op.body == "create":
            return self.create_model
        if op.body == "update":
            return self.patch_model
        if op.body == "params":
            return op.parameters_model
        return None

    def body_fields(self, op: Operation) -> list[Field]:
        if op.body == "create":
            return self.api_fields(create=True)
        if op.body == "update":
            return self.api_fields(update=True)
        return list(op.params)

    # ------------------------------------------------------------------ values
    def validate(self, data: Mapping[str, Any], *, update: bool = False,
                 code: Code = Code.VALIDATION_FAILED) -> dict[str, Any]:
        """``data`` checked against the create (or patch) model: the fields it names (create:
        with the declared defaults), or ServiceError ``code`` naming each problem — the same
        rule for the API, the CLI and files."""
        return self.parse_body(self.operation_for_body("update" if update else "create"),
                               data, code=code)

    def operation_for_body(self, body: str) -> Operation:
        for op in self.operations:
            if op.body == body:
                return op
        raise KeyError(body)

    def parse_body(self, op: Operation, data: Any, *, code: Code = Code.VALIDATION_FAILED
                   ) -> dict[str, Any]:
        """The body of ``op`` validated by its model: a dict of what it names (a create with
        the declared defaults filled in); ServiceError ``code`` naming every problem."""
        model = self.body_model(op)
        if model is None:
            return {}
        if not isinstance(data, Mapping):
            raise ServiceError(code, "The request body must be a JSON object.")
        try:
            parsed = model.model_validate(dict(data))
        except ValidationError as exc:
            err = validation_error(exc)
            raise ServiceError(code, err.message, err.details) from None
        given = parsed.model_dump(exclude_unset=op.body == "update")
        if op.body == "update":
            self.refuse_nulls(given, code)
        return given

    def refuse_nulls(self, given: Mapping[str, Any], code: Code = Code.VALIDATION_FAILED) -> None:
        """Null clears only nullable fields; anything else named null is refused."""
        for f in self.api_fields(update=True):
            where = given.get(f.group, {}) if f.group else given
            if isinstance(where, Mapping) and f.name in where and where[f.name] is None \
                    and not f.nullable:
                raise ServiceError(code, f"{f.path} cannot be null.",
                                   {"field": f.path, "fields": [f.path]})
        for group in {f.group for f in self.fields if f.group}:
            if group in given and given[group] is None:
                raise ServiceError(code, f"{group} cannot be null.",
                                   {"field": group, "fields": [group]})

    def values(self, data: Mapping[str, Any], fields: list[Field] | None = None
               ) -> dict[str, Any]:
        """Column values from an API/file-shaped (nested) mapping; absent keys left out."""
        out: dict[str, Any] = {}
        for f in fields if fields is not None else self.fields:
            where = data.get(f.group) if f.group else data
            if isinstance(where, Mapping) and f.name in where:
                value = where[f.name]
                out[f.attr] = list(value) if isinstance(value, list | tuple) else value
        return out

    def defaults(self) -> dict[str, Any]:
        """Column values of every field with a declared default (what a create starts from)."""
        return {f.attr: (list(f.default) if isinstance(f.default, list | tuple) else f.default)
                for f in self.fields if f.default is not REQUIRED and f.read is None
                and f.create}

    def changes(self, row: Any, values: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
        """(field path, old, new) for every column value that differs from ``row``'s."""
        by_attr = {f.attr: f for f in self.fields}
        return [(by_attr[a].path if a in by_attr else a, getattr(row, a), v)
                for a, v in values.items() if getattr(row, a) != v]

    def assign(self, row: Any, values: Mapping[str, Any]) -> list[str]:
        """Set the changed columns on ``row``; the field paths that changed."""
        by_attr = {f.attr: f for f in self.fields}
        changed = []
        for attr, value in values.items():
            if getattr(row, attr) != value:
                setattr(row, attr, value)
                changed.append(by_attr[attr].path if attr in by_attr else attr)
        return changed

    def view(self, row: Any, ctx: Any = None, fields: list[Field] | None = None
             ) -> dict[str, Any]:
        """The JSON-ready view of ``row`` (nested groups, ISO 8601 times); ``ctx`` is passed to
        computed fields."""
        out: dict[str, Any] = {}
        for f in fields if fields is not None else [f for f in self.fields if f.output]:
            value = f.read(row, ctx) if f.read is not None else getattr(row, f.attr)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, list | tuple):
                value = list(value)
            (out.setdefault(f.group, {}) if f.group else out)[f.name] = value
        return out

    def file_entry(self, row: Any) -> dict[str, Any]:
        """The row as an entry of a declarative file (export)."""
        return self.view(row, None, [f for f in self.fields
                                     if f.in_file and f.create and f.output])

    def describe(self) -> dict[str, Any]:
        """The declaration as plain data, for a console's list page and form."""
        return {"name": self.name, "singular": self.singular, "label": self.label,
                "help": self.help, "fields": [f.describe() for f in self.fields],
                "list_columns": self.list_columns,
                "operations": [{"name": op.name, "method": op.method, "path": op.path,
                                "scope": op.scope.value, "summary": op.summary,
                                "filters": [flt.name for flt in op.filters]}
                               for op in self.operations]}
