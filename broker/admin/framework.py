"""Admin resources as data: one declaration per resource, everything else derived from it.

In the spirit of Django's ``ModelAdmin`` and Flask-Admin's ``ModelView``: a :class:`Resource`
lists its :class:`Field` s (type, label, help text, choices, limits, default, where it may be
set), its list :class:`Filter` s and its :class:`Operation` s (HTTP method and path, the scope
an admin token needs, the audit event, the use case that runs). From that one declaration come

* the strict pydantic models the admin API validates with and documents (``create_model``,
  ``patch_model``, ``out_model``, ``page_model``), which the CLI and apply validate with too;
* the JSON view of a row (:meth:`Resource.view`) and the column values of a body
  (:meth:`Resource.values`), so a field's name, group and column are written once;
* the admin API routes and OpenAPI document (``broker.web.admin_api``, ``broker.web.openapi``),
  the ``broker admin`` commands (``broker.admin_cli``), apply/export
  (``broker.service.directories``) and a console's list pages and forms (``describe()``).

Service layer: nothing here knows HTTP or click. Declarations live in
:mod:`broker.admin.declarations`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, create_model
from pydantic import Field as PydanticField
from sqlalchemy import Select
from sqlalchemy.orm import Session

from broker.codes import Code
from broker.kinds import Scope
from broker.service.errors import ServiceError

MAX_LIMIT = 500
DEFAULT_LIMIT = 50

#: Operator-chosen ids (directories, WorkSpaces): the same rule on every path.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ID_RULE = ("1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit "
           f"(pattern {ID_PATTERN})")
FINGERPRINT_PATTERN = r"^[0-9a-fA-F]{64}$"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: A field's default when a create must name it.
REQUIRED: Any = _Required()


#: Characters no one-line text field may hold: every C0 control and DEL.
SINGLE_LINE_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_single_line(value: Any) -> Any:
    """A one-line text field (a name, a UPN, a bundle) holds no control character: a line
    break or tab there would forge lines in logs, tables and exported files."""
    if isinstance(value, str) and SINGLE_LINE_CONTROL.search(value):
        raise ValueError("may not contain control characters (line breaks, tabs, NUL)")
    return value


def check_id(value: Any) -> Any:
    """The id rule as a pydantic validator: a clear message that shows the real pattern."""
    if isinstance(value, str) and not re.fullmatch(ID_PATTERN, value):
        raise ValueError(f"{value!r} is not a valid id: {ID_RULE}")
    return value


@dataclass(frozen=True, eq=False)
class Field:
    """One field of a resource, as the API, the CLI, files and a console form show it."""

    name: str
    type: Any
    label: str
    help: str
    default: Any = REQUIRED
    #: Nested object the field sits in ("smart_card" → {"smart_card": {"pre_session": …}}).
    group: str | None = None
    #: ORM attribute; None: the field's name.
    column: str | None = None
    choices: tuple[str, ...] = ()
    #: pydantic limits: min_length, max_length, pattern, ge, le (of a list: its length).
    limits: Mapping[str, Any] = field(default_factory=dict)
    #: Limits of each item of a list field (e.g. an OID pattern).
    item_limits: Mapping[str, Any] = field(default_factory=dict)
    #: Extra validators run before the type check (e.g. :func:`check_id`).
    validators: tuple[Callable[[Any], Any], ...] = ()
    create: bool = True
    update: bool = True
    output: bool = True
    #: May be null: absent on create, and cleared with null on update.
    nullable: bool = False
    #: Part of the declarative directory file (apply/export).
    in_file: bool = True
    in_api: bool = True
    #: Shown as a column of the CLI table / console list.
    list_column: bool = False
    #: A console list column only (too wide for a terminal table: times, details).
    console_column: bool = False
    #: A time that matters when it passes (expiry, nextUpdate): a console flags it past, and
    #: near when it is closer than this.
    warn_within: timedelta | None = None
    #: A value an admin copies elsewhere (a registration code): a console offers a copy button.
    copyable: bool = False
    #: Computed output value from (row, context) instead of reading ``column``.
    read: Callable[[Any, Any], Any] | None = None
    #: CLI: option name without dashes (default: the name with dashes), the "off" name of a
    #: boolean, a positional argument instead of an option, where the value is read from.
    cli: str | None = None
    cli_off: str | None = None
    cli_positional: bool = False
    cli_input: Literal["stdin", "file", "file_b64"] | None = None
    #: A relaxation of the RFC 5280 profile: the option of the same name of
    #: :class:`broker.pki.profile.ProfileOptions` (see ``admin.profile_options``).
    profile: bool = False

    @property
    def path(self) -> str:
        return f"{self.group}.{self.name}" if self.group else self.name

    @property
    def attr(self) -> str:
        return self.column or self.name

    @property
    def is_list(self) -> bool:
        return self.type is list

    def annotation(self, *, optional: bool = False) -> Any:
        """The pydantic type: choices (case-insensitive on input), limits, validators."""
        item: Any
        if self.choices:
            item = Literal[self.choices]  # type: ignore[valid-type]
            item = Annotated[item, BeforeValidator(_canonical_choice(self.choices))]
        else:
            item = str if self.is_list else self.type
        # Files and stdin (PEM, CRL, password) are multi-line; every other text is one line.
        one_line = item is str and self.cli_input is None
        if self.is_list and self.item_limits:
            item = Annotated[item, PydanticField(**self.item_limits)]
        if self.is_list and one_line:
            item = Annotated[item, BeforeValidator(check_single_line)]
        if self.is_list:
            ann: Any = Annotated[list[item], PydanticField(**self.limits)]  # type: ignore[valid-type]
        elif self.limits:
            ann = Annotated[item, PydanticField(**self.limits)]
        else:
            ann = item
        if one_line and not self.is_list:
            # Outside the limits, so the pattern and lengths stay in the JSON schema.
            ann = Annotated[ann, BeforeValidator(check_single_line)]
        for validator in self.validators:
            ann = Annotated[ann, BeforeValidator(validator)]
        if optional or self.nullable:
            ann = ann | None
        return ann

    def describe(self) -> dict[str, Any]:
        """What a console needs to render the field in a list and a form."""
        return {"name": self.path, "label": self.label, "help": self.help,
                "type": "list" if self.is_list else getattr(self.type, "__name__",
                                                              str(self.type)),
                "choices": list(self.choices), "required": self.default is REQUIRED,
                "default": None if self.default is REQUIRED else self.default,
                "read_only": not (self.create or self.update), "create_only": not self.update,
                "nullable": self.nullable, "list_column": self.list_column,
                "console_column": self.list_column or self.console_column,
                "warn_within_s": self.warn_within.total_seconds() if self.warn_within else None,
                "copyable": self.copyable}


def _canonical_choice(choices: tuple[str, ...]) -> Callable[[Any], Any]:
    lowered = {c.lower(): c for c in choices}

    def canonical(value: Any) -> Any:
        if isinstance(value, str):
            return lowered.get(value.strip().lower(), value)
        return value

    return canonical


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
    errors: tuple[str, ...] = ()
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
        return [f for f in self.fields if f.output and (f.list_column or f.console_column)]

    def operation(self, name: str) -> Operation:
        for op in self.operations:
            if op.name == name:
                return op
        raise KeyError(name)

    # ------------------------------------------------------------------ models

    def _model(self, suffix: str, fields: list[Field], *, patch: bool, base: type[BaseModel],
               file: bool = False) -> type[BaseModel]:
        stem = self.title or self.singular.title().replace(" ", "")
        top: dict[str, Any] = {}
        groups: dict[str, dict[str, Any]] = {}
        for f in fields:
            if patch:
                spec: tuple[Any, Any] = (f.annotation(optional=True), None)
            elif suffix == "Out":
                spec = (f.annotation(), ...)
            else:
                default = None if f.nullable and f.default is REQUIRED else f.default
                spec = (f.annotation(), ... if default is REQUIRED else default)
            described = (spec[0], PydanticField(spec[1], title=f.label, description=f.help)
                         if spec[1] is not ... else PydanticField(title=f.label,
                                                                  description=f.help))
            (groups.setdefault(f.group, {}) if f.group else top)[f.name] = described
        for group, members in groups.items():
            gname = stem + "".join(p.title() for p in group.split("_")) + suffix
            gmodel = create_model(gname, __base__=base, **members)  # type: ignore[call-overload]
            if patch:
                top[group] = (gmodel | None, None)
            elif suffix == "Out":
                top[group] = (gmodel, ...)
            else:
                top[group] = (gmodel, PydanticField(default_factory=gmodel))
        return create_model(stem + suffix, __base__=base, **top)  # type: ignore[call-overload]

    @cached_property
    def create_model(self) -> type[BaseModel]:
        """The strict body of a create (required fields required, defaults declared)."""
        return self._model("Create", self.api_fields(create=True), patch=False, base=Strict)

    @cached_property
    def patch_model(self) -> type[BaseModel]:
        """The strict body of an update: every updatable field optional."""
        return self._model("Patch", self.api_fields(update=True), patch=True, base=Strict)

    @cached_property
    def out_model(self) -> type[BaseModel]:
        """What the API answers for one row (unknown keys forbidden, so views cannot drift)."""
        return self._model("Out", [f for f in self.fields if f.output], patch=False,
                           base=Out)

    def file_model(self, **extra: Any) -> type[BaseModel]:
        """The strict entry of a declarative file: the file's fields plus ``extra``."""
        model = self._model("Spec", [f for f in self.fields if f.in_file and f.create],
                            patch=False, base=Strict)
        if not extra:
            return model
        return create_model(model.__name__, __base__=model, **extra)  # type: ignore[call-overload]

    @cached_property
    def page_model(self) -> type[BaseModel]:
        return create_model(f"{self.out_model.__name__[:-3]}Page", __base__=Out,
                            items=(list[self.out_model], ...),  # type: ignore[name-defined]
                            next_cursor=(str | None, ...))

    @cached_property
    def items_model(self) -> type[BaseModel]:
        return create_model(f"{self.out_model.__name__[:-3]}Items", __base__=Out,
                            items=(list[self.out_model], ...))  # type: ignore[name-defined]

    def response_model(self, op: Operation) -> type[BaseModel] | None:
        return {"item": self.out_model, "items": self.items_model, "page": self.page_model,
                None: None}[op.out]

    def body_model(self, op: Operation) -> type[BaseModel] | None:
        if op.body == "create":
            return self.create_model
        if op.body == "update":
            return self.patch_model
        if op.body == "params":
            return _params_model(op)
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


_PARAM_MODELS: dict[int, type[BaseModel]] = {}


def _params_model(op: Operation) -> type[BaseModel]:
    if id(op) not in _PARAM_MODELS:
        members = {f.name: (f.annotation(), PydanticField(
            ... if f.default is REQUIRED else f.default, title=f.label, description=f.help))
            for f in op.params}
        _PARAM_MODELS[id(op)] = create_model(  # type: ignore[call-overload]
            op.params_model, __base__=Strict, **members)
    return _PARAM_MODELS[id(op)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


def validation_error(exc: ValidationError) -> ServiceError:
    """One ServiceError (validation_failed) naming every field that is wrong, messages intact."""
    problems = []
    fields = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"] if not _is_type_tag(p)) or "body"
        fields.append(where)
        msg = "is not allowed" if err["type"] == "extra_forbidden" else err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        problems.append(f"{where}: {msg}")
    return ServiceError(Code.VALIDATION_FAILED, "Invalid: " + "; ".join(problems) + ".",
                        {"fields": fields, "field": fields[0] if fields else None,
                         "problems": problems})


def _is_type_tag(part: Any) -> bool:
    # pydantic adds the union member or validator to locations: ("region", "str") etc.
    return isinstance(part, str) and (part in ("str", "int", "bool", "list[str]", "none")
                                      or part.startswith(("literal[", "function-", "list[",
                                                          "Literal[")))


# --------------------------------------------------------------------------- pagination

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
