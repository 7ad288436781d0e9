"""The pydantic models generated from a resource's fields: the strict bodies of a create and an
update, the entry of a directory file, the view of a row, its page and item lists, and the
body of an operation that takes parameters. The admin API validates and documents with them;
the CLI and apply validate with them too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, create_model
from pydantic import Field as PydanticField

from broker.admin.fields import REQUIRED, Field, Out, Strict


def fields_model(stem: str, suffix: str, fields: Sequence[Field], *, patch: bool,
                 base: type[BaseModel]) -> type[BaseModel]:
    """``stem + suffix``: one member per field, a nested model per group. ``patch``: every
    member optional; suffix "Out": every member required; else the declared defaults."""
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


def extended(model: type[BaseModel], **extra: Any) -> type[BaseModel]:
    """``model`` with more members, under the same name."""
    return create_model(model.__name__, __base__=model, **extra)  # type: ignore[call-overload]


def page_of(out: type[BaseModel]) -> type[BaseModel]:
    """``{"items": [out], "next_cursor": str | None}``."""
    return create_model(f"{out.__name__[:-3]}Page", __base__=Out,
                        items=(list[out], ...),  # type: ignore[valid-type]
                        next_cursor=(str | None, ...))


def items_of(out: type[BaseModel]) -> type[BaseModel]:
    """``{"items": [out]}``."""
    return create_model(f"{out.__name__[:-3]}Items", __base__=Out,
                        items=(list[out], ...))  # type: ignore[valid-type]


def params_model(name: str, params: Sequence[Field]) -> type[BaseModel]:
    """The strict body of an operation that takes parameters instead of a resource body."""
    members = {f.name: (f.annotation(), PydanticField(
        ... if f.default is REQUIRED else f.default, title=f.label, description=f.help))
        for f in params}
    return create_model(name, __base__=Strict, **members)  # type: ignore[call-overload]
