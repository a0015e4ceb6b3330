"""`qcompile validate`: many files at once, three output formats, exit codes 0 / 1."""

import json
import shutil

from click.testing import CliRunner

from qcompile.cli.main import cli
from tests.conftest import TESTS

SPECS = TESTS / "specs"


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_valid_specs_exit_zero():
    result = run("validate", str(SPECS / "deepspeed-zero2.yaml"), str(SPECS / "naive-model-parallel.yaml"))
    assert result.exit_code == 0, result.output
    assert "2 valid, 0 invalid" in result.output


def test_folder_of_good_and_bad_specs_reports_every_problem(tmp_path):
    shutil.copytree(SPECS / "invalid", tmp_path / "specs")
    shutil.copy(SPECS / "naive-model-parallel.yaml", tmp_path / "specs" / "good.yaml")
    shutil.copytree(SPECS / "models", tmp_path / "specs" / "models")
    result = run("validate", str(tmp_path / "specs"))
    assert result.exit_code == 1
    bad = sorted(p.name for p in (tmp_path / "specs").glob("*.yaml") if p.name != "good.yaml")
    for name in bad:
        assert f"{tmp_path / 'specs' / name}:" in result.output  # file:line:col prefix
    assert "good.yaml: ok" in result.output
    assert f"1 valid, {len(bad)} invalid" in result.output


def test_json_format():
    result = run("validate", "--format", "json", str(SPECS / "invalid" / "out_of_range.yaml"))
    assert result.exit_code == 1
    (report,) = json.loads(result.output)
    assert report["valid"] is False
    first = report["diagnostics"][0]
    assert (first["line"], first["col"], first["path"]) == (6, 21, "hardware.devices_per_node")
    assert first["code"] == "greater_than_equal" and first["severity"] == "error"


def test_github_format():
    result = run("validate", "--format", "github", str(SPECS / "invalid" / "unknown_keys.yaml"))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines and all(line.startswith("::error file=") for line in lines)
    assert any(",line=9,col=3,title=extra_forbidden::lora.rr: unknown key" in line for line in lines)


def test_schema_is_json_schema_with_descriptions():
    result = run("schema")
    assert result.exit_code == 0
    schema = json.loads(result.output)
    lora = schema["$defs"]["LoraSpec"]["properties"]
    assert all(field.get("description") for field in lora.values())
    assert schema["additionalProperties"] is False
