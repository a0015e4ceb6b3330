"""`qcompile schema`: the spec's JSON Schema, for editors (yaml-language-server) and docs.

The schema must accept what the loader accepts, so the models' own schema is adjusted where the loader is
more lenient than pydantic's JSON Schema says: `backend: NAME` (the string form of `{kind: NAME}`), numbers
that YAML 1.1 reads as strings (`1e-4`; PyYAML needs `1.0e-4` for a float) and `mixed_precision: no`
(YAML 1.1's false). Defaults made by a factory (lists) are written out so that hovers show them."""

from __future__ import annotations

import json

import click

# A decimal or exponent number written as a YAML 1.1 string; the loader converts it.
NUMBER_STRING = r"^\s*[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$"
SIGNED_NUMBER_STRING = NUMBER_STRING.replace("[+]?", "[-+]?")


def _accept_backend_names(schema: dict) -> None:
    """`backend: NAME` means `backend: {kind: NAME}` (Spec._name_is_kind)."""
    backend = schema["properties"]["backend"]
    kinds = sorted(backend["discriminator"]["mapping"])
    mapping = {k: backend.pop(k) for k in ("oneOf", "discriminator")}
    backend["anyOf"] = [{"type": "string", "enum": kinds}, mapping]
    backend.setdefault("default", "auto")


def _accept_number_strings(node: object) -> None:
    """Every `type: number` also takes a number string; negative ones only where the field allows them.
    (JSON Schema cannot compare a string's value: a string's bounds are the loader's to check.)"""
    if isinstance(node, list):
        for item in node:
            _accept_number_strings(item)
        return
    if not isinstance(node, dict):
        return
    for value in node.values():
        _accept_number_strings(value)
    if node.get("type") == "number":
        bounds = {k: node.pop(k) for k in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")
                  if k in node}
        non_negative = bounds.get("minimum", bounds.get("exclusiveMinimum", -1)) >= 0
        node.pop("type")
        node["anyOf"] = [{"type": "number", **bounds},
                         {"type": "string", "pattern": NUMBER_STRING if non_negative else SIGNED_NUMBER_STRING}]


def _accept_yaml_no(schema: dict) -> None:
    """StrategiesSpec._yaml_no: a bare `no` (false in YAML 1.1) means "no"."""
    prop = schema["$defs"]["StrategiesSpec"]["properties"]["mixed_precision"]
    choice = {k: prop.pop(k) for k in ("enum", "type")}
    prop["anyOf"] = [choice, {"const": False}]


def _factory_defaults(schema: dict, root) -> None:
    """pydantic leaves out defaults made by a default_factory; write those that are plain values."""
    from pydantic import BaseModel

    seen, todo = set(), [root]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        where = schema if model is root else schema["$defs"].get(model.__name__, {})
        props = where.get("properties", {})
        for name, field in model.model_fields.items():
            todo += _models_in(field.annotation)
            if field.default_factory is None or name not in props:
                continue
            value = field.default_factory()
            if not isinstance(value, (BaseModel, dict)):
                props[name].setdefault("default", json.loads(json.dumps(value)))


def _models_in(annotation) -> list:
    import typing

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def spec_json_schema() -> dict:
    from qcompile.schemas.spec import Spec

    schema = Spec.model_json_schema()
    _factory_defaults(schema, Spec)
    _accept_backend_names(schema)
    _accept_yaml_no(schema)
    _accept_number_strings(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "qcompile spec (version 1)"
    return schema


def schema_text() -> str:
    """The schema as `qcompile schema` prints it (and as the repository's spec.schema.json holds it)."""
    return json.dumps(spec_json_schema(), indent=2, sort_keys=True) + "\n"


@click.command()
@click.option("--format", "fmt", type=click.Choice(["json", "markdown"]), default="json", show_default=True)
def schema(fmt: str) -> None:
    """Print the JSON Schema of the spec (or its Markdown reference)."""
    if fmt == "markdown":
        from qcompile.schemas.reference import markdown_reference

        click.echo(markdown_reference(), nl=False)
    else:
        click.echo(schema_text(), nl=False)
