"""A field of an admin resource: its type and limits, where it may be set, and how each edge
shows it (:class:`CliSpec` for ``broker admin``, :class:`ConsoleSpec` for the console).

Also the id and one-line rules every text field follows, the strict pydantic bases and the one
translation of a pydantic error into validation_failed. Service layer: nothing here knows HTTP
or click.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic import Field as PydanticField

from broker.codes import Code
from broker.service.errors import ServiceError

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


#: The limits and validator of an operator-chosen id field (``Field(..., **ID_RULES)``).
ID_RULES: dict[str, Any] = {"validators": (check_id,), "limits": {"pattern": ID_PATTERN}}


@dataclass(frozen=True)
class CliSpec:
    """How ``broker admin`` offers a field."""

    #: Option name without dashes (default: the field's name with dashes).
    name: str | None = None
    #: The "off" option of a boolean (default: no-NAME).
    off: str | None = None
    #: A positional argument instead of an option.
    positional: bool = False
    #: Where the value is read from: stdin, a file, a file whose DER is sent as base64. Such
    #: values may span lines (PEM, CRL, a password); every other text is one line.
    input: Literal["stdin", "file", "file_b64"] | None = None


@dataclass(frozen=True)
class ConsoleSpec:
    """How the console shows a field beyond the list columns it shares with the CLI."""

    #: A console list column only (too wide for a terminal table: times, details).
    column: bool = False
    #: A time that matters when it passes (expiry, nextUpdate): the console flags it past, and
    #: near when it is closer than this.
    warn_within: timedelta | None = None
    #: A value an admin copies elsewhere (a registration code): the console offers a copy
    #: button.
    copyable: bool = False


NO_CLI = CliSpec()
NO_CONSOLE = ConsoleSpec()


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
    #: Shown as a column of the CLI table and the console list.
    list_column: bool = False
    #: Computed output value from (row, context) instead of reading ``column``.
    read: Callable[[Any, Any], Any] | None = None
    cli: CliSpec = NO_CLI
    console: ConsoleSpec = NO_CONSOLE

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
        one_line = item is str and self.cli.input is None
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
        warn = self.console.warn_within
        return {"name": self.path, "label": self.label, "help": self.help,
                "type": "list" if self.is_list else getattr(self.type, "__name__",
                                                              str(self.type)),
                "choices": list(self.choices), "required": self.default is REQUIRED,
                "default": None if self.default is REQUIRED else self.default,
                "read_only": not (self.create or self.update), "create_only": not self.update,
                "nullable": self.nullable, "list_column": self.list_column,
                "console_column": self.list_column or self.console.column,
                "warn_within_s": warn.total_seconds() if warn else None,
                "copyable": self.console.copyable}


def _canonical_choice(choices: tuple[str, ...]) -> Callable[[Any], Any]:
    lowered = {c.lower(): c for c in choices}

    def canonical(value: Any) -> Any:
        if isinstance(value, str):
            return lowered.get(value.strip().lower(), value)
        return value

    return canonical


def time_field(name: str, label: str, help: str, column: str | None = None, *,
               console: ConsoleSpec = NO_CONSOLE, list_column: bool = False) -> Field:
    """A read-only timestamp (ISO 8601, UTC)."""
    return Field(name, str, label, help, column=column, nullable=True, create=False,
                 update=False, in_file=False, console=console, list_column=list_column)


def out_field(name: str, type_: Any, label: str, help: str = "", *, column: str | None = None,
              nullable: bool = False, list_column: bool = False, read: Any = None,
              console: ConsoleSpec = NO_CONSOLE) -> Field:
    """A read-only output field."""
    return Field(name, type_, label, help or label + ".", column=column, nullable=nullable,
                 create=False, update=False, in_file=False, list_column=list_column, read=read,
                 console=console)


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
