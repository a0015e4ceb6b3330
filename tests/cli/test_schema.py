"""`qcompile schema` accepts what the loader accepts, explains every key, and is what the examples reference."""

import copy
import json
import re

import pytest
import yaml
from click.testing import CliRunner
from pydantic import ValidationError

from qcompile.cli.main import cli
from qcompile.cli.schema import schema_text
from qcompile.compiler.yaml_source import read_yaml
from qcompile.schemas.spec import Spec
from tests.conftest import REPO, TESTS, compare_golden

jsonschema = pytest.importorskip("jsonschema")
SCHEMA_FILE = REPO / "schemas" / "spec.schema.json"
SPECS = sorted((REPO / "examples").glob("*.yaml")) + sorted((TESTS / "specs").glob("*.yaml"))
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(CliRunner().invoke(cli, ["schema"]).output)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_committed_schema_file_is_the_command_output(update_golden):
    compare_golden(SCHEMA_FILE, schema_text(), update_golden)


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_example_and_test_spec_validates_against_the_schema(spec, validator):
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(yaml.safe_load(spec.read_text()))]
    assert not errors


@pytest.mark.parametrize("example", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_references_the_schema_through_the_modeline(example):
    match = MODELINE.match(example.read_text().splitlines()[0])
    assert match, "the first line must be the yaml-language-server modeline"
    assert (example.parent / match[1]).resolve() == SCHEMA_FILE


BASE = yaml.safe_load((TESTS / "specs" / "deepspeed-zero2.yaml").read_text())
# (key path, value): the loader and the schema must both accept, or both refuse, each one
CASES = [
    *[(("backend",), kind) for kind in ("auto", "deepspeed-zero2", "deepspeed-zero3", "accelerate-offload",
                                        "naive-model-parallel")],
    (("backend",), "deepspeed-zero4"),
    (("backend",), {"kind": "deepspeed-zero3", "overlap_comm": False}),
    (("backend",), {"kind": "deepspeed-zero2", "prefetch_bucket_size": 5}),
    (("backend",), {"overlap_comm": False}),
    (("hardware", "device_memory"), "80GiB"),
    (("hardware", "device_memory"), "4 gib"),
    (("hardware", "device_memory"), "1.5TB"),
    (("hardware", "device_memory"), 1 << 30),
    (("hardware", "device_memory"), "lots"),
    (("hardware", "device_memory"), "80GiBs"),
    (("hardware", "device_memory"), -1),
    (("hardware", "disk"), None),
    (("hardware", "disk"), "1TB"),
    (("training", "learning_rate"), "1e-4"),  # YAML 1.1 reads 1e-4 as a string
    (("training", "learning_rate"), 1.0e-4),
    (("training", "learning_rate"), "-1e-4"),
    (("training", "learning_rate"), "fast"),
    (("training", "learning_rate"), 0),
    (("lora", "r"), 8),
    (("lora", "r"), 0),
    (("lora", "rr"), 8),
    (("strategies", "mixed_precision"), "no"),
    (("strategies", "mixed_precision"), False),
    (("strategies", "mixed_precision"), "fp8"),
    (("model", "dtype"), "bf16"),
    (("model", "name"), ""),
    (("version",), 2),
]


@pytest.mark.parametrize("path, value", CASES, ids=lambda v: repr(v))
def test_schema_and_loader_agree(path, value, validator, tmp_path):
    data = copy.deepcopy(BASE)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data))
    try:  # the loader's shape stage: YAML as the loader reads it, then the models (not the cross-field rules)
        Spec.model_validate(read_yaml(spec.read_text())[0])
        loader_accepts = True
    except ValidationError:
        loader_accepts = False
    schema_accepts = validator.is_valid(yaml.safe_load(spec.read_text()))
    assert schema_accepts == loader_accepts


def _properties(schema: dict):
    for name, definition in schema["$defs"].items():
        for key, prop in definition.get("properties", {}).items():
            yield f"{name}.{key}", prop
    yield from schema["properties"].items()


def test_every_key_has_a_description_and_every_optional_key_its_default():
    schema = json.loads(schema_text())
    missing = [name for name, prop in _properties(schema) if not prop.get("description")]
    assert not missing
    for name, definition in schema["$defs"].items():
        required = set(definition.get("required", []))
        for key, prop in definition.get("properties", {}).items():
            if key not in required and "$ref" not in prop:
                assert "default" in prop, f"{name}.{key} has no default in the schema"
    assert schema["$defs"]["LoraSpec"]["properties"]["r"]["default"] == 16
    assert schema["properties"]["backend"]["default"] == "auto"
