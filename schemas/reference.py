"""The spec reference in Markdown, generated from the field descriptions (the README embeds it)."""

from __future__ import annotations

import json
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .spec import Spec
from .units import parse_bytes


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner = " \\| ".join(_type_name(a) for a in args)
        return inner + (" \\| null" if len(args) < len(typing.get_args(annotation)) else "")
    if origin is list:
        return f"list of {_type_name(typing.get_args(annotation)[0])}"
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    return getattr(annotation, "__name__", str(annotation))


def _field_type(field) -> str:
    inner = [getattr(a, "__metadata__", ()) for a in typing.get_args(field.annotation)]
    if any(getattr(m, "func", None) is parse_bytes for m in [*field.metadata, *sum(inner, ())]):
        return "size (`80GiB`)" if field.is_required() else "size \\| null"
    return _type_name(field.annotation)


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        return "" if isinstance(value, (BaseModel, dict)) else f"`{json.dumps(value)}`"
    return f"`{json.dumps(field.default)}`"


def _section(cls: type[BaseModel], prefix: str) -> list[str]:
    rows, nested = [], []
    for name, field in cls.model_fields.items():
        key = f"{prefix}{name}"
        rows.append(f"| `{key}` | {_field_type(field)} | {_default(field)} | {field.description or ''} |")
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            nested += _section(field.annotation, f"{key}.")
    return rows + nested


def markdown_reference() -> str:
    lines = []
    for name, field in Spec.model_fields.items():
        annotation = field.annotation
        lines.append(f"### `{name}`\n\n{field.description}\n")
        if name == "backend":
            members = [m for m in typing.get_args(annotation) if isinstance(m, type)]
            lines.append("| key | type | default | meaning |\n|---|---|---|---|")
            for member in members:
                lines += _section(member, "backend.")
            lines.append("")
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines.append("| key | type | default | meaning |\n|---|---|---|---|")
            lines += _section(annotation, f"{name}.")
            lines.append("")
    return "\n".join(lines)
