"""`qcompile schema`: the spec's JSON Schema, for editors (yaml-language-server) and docs."""

import json

import click

from qcompile.schemas.reference import markdown_reference
from qcompile.schemas.spec import Spec


def spec_json_schema() -> dict:
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "qcompile spec (version 1)"
    return schema


@click.command()
@click.option("--format", "fmt", type=click.Choice(["json", "markdown"]), default="json", show_default=True)
def schema(fmt: str) -> None:
    """Print the JSON Schema of the spec (or its Markdown reference)."""
    if fmt == "markdown":
        click.echo(markdown_reference(), nl=False)
    else:
        click.echo(json.dumps(spec_json_schema(), indent=2, sort_keys=True))
