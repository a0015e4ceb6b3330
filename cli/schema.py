"""`qcompile schema`: the spec's JSON Schema, for editors (yaml-language-server) and docs."""

import json

import click

from qcompile.schemas import Spec


def spec_json_schema() -> dict:
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "qcompile spec (version 1)"
    return schema


@click.command()
def schema() -> None:
    """Print the JSON Schema of the spec."""
    click.echo(json.dumps(spec_json_schema(), indent=2, sort_keys=True))
