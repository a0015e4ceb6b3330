"""Turn pydantic's validation errors into positioned diagnostics with hints ("did you mean ...")."""

from __future__ import annotations

import typing

from pydantic import BaseModel, ValidationError

from qcompile.schemas.backend import BACKEND_KINDS

from .diagnostics import Diagnostic, KeyPath, error
from .yaml_source import Positions


def _model_classes(annotation) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, unions and Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out = []
    for arg in typing.get_args(annotation):
        out += _model_classes(arg)
    return out


def _model_at(root: type[BaseModel], data: object, path: KeyPath) -> type[BaseModel] | None:
    """The model class that validates the mapping at `path` (the union member chosen by `kind`)."""
    cls, node = root, data
    for part in path:
        if cls is None or not isinstance(part, str) or part not in cls.model_fields:
            return None
        node = node.get(part) if isinstance(node, dict) else None
        candidates = _model_classes(cls.model_fields[part].annotation)
        if len(candidates) > 1 and isinstance(node, dict):
            kind = node.get("kind")
            candidates = [c for c in candidates if "kind" in c.model_fields and
                          kind in typing.get_args(c.model_fields["kind"].annotation)]
        cls = candidates[0] if len(candidates) == 1 else None
    return cls


def _data_path(loc: tuple, data: object) -> KeyPath:
    """pydantic puts a discriminated union's tag into `loc`; drop it so the path matches the file."""
    path: list = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("kind") == part:
            continue
        if isinstance(node, str) and path and path[-1] == "backend":
            continue  # `backend: name` shorthand
        path.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(path)


ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "bfloat16": "bf16", "float16": "fp16"}


def _suggest(word: str, choices: typing.Iterable[str]) -> str | None:
    choices = list(choices)
    if ALIASES.get(str(word)) in choices:
        return f"did you mean '{ALIASES[str(word)]}'?"
    import difflib  # only for a misspelt word

    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def _literal_choices(ctx: dict | None) -> list[str]:
    expected = (ctx or {}).get("expected", "")
    return [c.strip().strip("'") for c in expected.replace(" or ", ",").split(",") if c.strip()]


def _message(err: dict) -> str:
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    msg = msg.replace("Input should be", "must be").replace("Input should have", "must have")
    return msg.replace("List should have", "must have").replace(" after validation", "")


def to_diagnostics(exc: ValidationError, data: object, positions: Positions,
                   root: type[BaseModel]) -> list[Diagnostic]:
    out = []
    for err in exc.errors(include_url=False):
        kind = err["type"]
        path = _data_path(err["loc"], data)
        hint = None
        if kind == "missing":
            parent, key = path[:-1], path[-1]
            line, col = positions.of_value(parent)
            where = "the spec" if not parent else f"'{parent[-1]}'"
            model = _model_at(root, data, parent)
            field = model.model_fields.get(key) if model else None
            hint = f"{key}: {field.description}" if field and field.description else None
            out.append(error(path, f"missing required key '{key}' in {where}", kind, hint).at(None, line, col))
            continue
        if kind == "extra_forbidden":
            model = _model_at(root, data, path[:-1])
            hint = _suggest(path[-1], model.model_fields) if model else None
            line, col = positions.of_key(path)
            out.append(error(path, "unknown key", kind, hint).at(None, line, col))
            continue
        message = _message(err)
        if kind == "literal_error":
            hint = _suggest(err.get("input"), _literal_choices(err.get("ctx")))
            if path and path[-1] == "mixed_precision" and err.get("input") is False:
                hint = "quote it: \"no\" (YAML reads a bare no as false)"
        elif kind == "union_tag_invalid":
            tags = _literal_choices({"expected": err["ctx"]["expected_tags"]})
            message = f"unknown backend '{err['ctx']['tag']}'; expected one of {', '.join(tags)}"
            hint = _suggest(err["ctx"]["tag"], tags)
        elif kind == "union_tag_not_found":
            message = "a backend mapping needs a 'kind'"
            hint = f"add kind: one of {', '.join(BACKEND_KINDS)}"
        line, col = positions.of_value(path)
        out.append(error(path, message, kind, hint).at(None, line, col))
    return out
