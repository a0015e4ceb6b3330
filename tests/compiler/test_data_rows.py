"""Data rows checked before launch (light core): `qcompile validate` streams local JSON / JSON lines data
against the format and `data.columns`, each bad row at its line and column, capped with a count."""

import json
import subprocess
import sys
import time

import pytest
import yaml
from click.testing import CliRunner

from qcompile.cli.main import cli
from qcompile.templates.script.rows import RowError, check_row, scan_file
from tests.conftest import TESTS

SPEC = TESTS / "specs" / "naive-model-parallel.yaml"
GOOD_ALPACA = {"instruction": "Say cat.", "output": "cat"}


def spec_with(tmp_path, rows: list, suffix: str = ".jsonl", **data) -> str:
    """The naive-model-parallel test spec reading `rows` (strings: lines as written) from a file beside it."""
    spec = yaml.safe_load(SPEC.read_text())
    spec["model"]["config"] = str(TESTS / "specs" / "models" / "tiny-qwen2" / "config.json")
    path = tmp_path / f"data{suffix}"
    path.write_text("".join(r + "\n" for r in rows) if suffix == ".jsonl" else rows[0])
    spec["data"] = {"path": str(path), **data}
    spec["training"]["output_dir"] = str(tmp_path / "out")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    return str(tmp_path / "spec.yaml")


def validate(*args):
    return CliRunner().invoke(cli, ["validate", *map(str, args)])


def test_sharegpt_and_its_spellings_become_chat_messages():
    row = {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"},
                             {"from": "gpt", "value": "A"}, {"from": "user", "value": "Q2"},
                             {"from": "assistant", "value": "A2"}]}
    out = check_row(row, "sharegpt", {})
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert [m["content"] for m in out["messages"]] == ["S", "Q", "A", "Q2", "A2"]


def test_columns_rename_the_formats_fields():
    assert check_row({"prompt": "p", "answer": "a"}, "alpaca", {"instruction": "prompt", "output": "answer"}) == {
        "instruction": "p", "input": None, "output": "a"}
    with pytest.raises(RowError, match="'body' must be a string"):
        check_row({"body": 3}, "text", {"text": "body"})


def test_bad_rows_are_diagnostics_at_their_line_and_column(tmp_path):
    rows = [json.dumps(GOOD_ALPACA), '{"instruction": "a", "output": 3}', "", '{"instruction": "x",', "[1]"]
    result = validate(spec_with(tmp_path, rows))
    data = tmp_path / "data.jsonl"
    assert result.exit_code == 1, result.output
    assert f"{data}:2:22: error: 'output' must be a string, got int [data_row]" in result.output
    assert f"{data}:4:21: error: not valid JSON: Expecting property name enclosed in double quotes" in result.output
    assert f"{data}:5:1: error: expected a JSON object for the alpaca format, got list [data_row]" in result.output


def test_sharegpt_file_declared_as_chat_gets_a_hint(tmp_path):
    row = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    result = validate(spec_with(tmp_path, [json.dumps(row)], format="chat"))
    assert result.exit_code == 1
    assert "data.jsonl:1:1: error: missing key 'messages' for the chat format [data_row]" in result.output
    assert "hint: the row looks like the sharegpt format: set data.format: sharegpt" in result.output
    assert validate(spec_with(tmp_path, [json.dumps(row)], format="sharegpt")).exit_code == 0


def test_chat_rows_with_sharegpt_turns_get_a_hint(tmp_path):
    row = {"messages": [{"from": "human", "value": "hi"}]}
    result = validate(spec_with(tmp_path, [json.dumps(row)], format="chat"))
    assert "messages[0] has from/value, not role/content" in result.output
    assert "set data.format: sharegpt" in result.output


def test_bad_rows_are_capped_with_a_count(tmp_path):
    result = validate(spec_with(tmp_path, ['{"text": "x"}'] * 50))
    assert result.output.count("[data_row]") == 21  # 20 shown, then the count
    assert "30 more bad rows not shown (50 in all)" in result.output


def test_no_data_check_skips_rows_and_says_so(tmp_path):
    result = validate(spec_with(tmp_path, ['{"text": "x"}']), "--no-data-check")
    assert result.exit_code == 0, result.output
    assert "data rows not checked (--no-data-check)" in result.output


def test_json_array_rows_are_numbered(tmp_path):
    rows = json.dumps([GOOD_ALPACA, {"instruction": "a"}])
    result = validate(spec_with(tmp_path, [rows], suffix=".json"))
    assert "row 2: missing key 'output' for the alpaca format" in result.output


def test_file_kinds_and_folders(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    spec = spec_with(tmp_path, [json.dumps(GOOD_ALPACA)])
    text = open(spec).read().replace(str(tmp_path / "data.jsonl"), str(tmp_path / "notes.txt"))
    open(spec, "w").write(text)
    assert "unknown data file type '.txt' [data_file_type]" in validate(spec).output
    (tmp_path / "folder").mkdir()
    open(spec, "w").write(text.replace(str(tmp_path / "notes.txt"), str(tmp_path / "folder")))
    assert "directory that datasets' save_to_disk did not write" in validate(spec).output
    (tmp_path / "folder" / "dataset_dict.json").write_text("{}")
    assert validate(spec).exit_code == 0


def test_data_rules_in_the_schema(tmp_path):
    spec = spec_with(tmp_path, [json.dumps(GOOD_ALPACA)], columns={"messages": "turns"})
    assert "data.columns maps messages, which the alpaca format does not read" in validate(spec).output
    spec = spec_with(tmp_path, [json.dumps(GOOD_ALPACA)], hub_id="org/set")
    assert "give exactly one of data.path" in validate(spec).output
    spec = spec_with(tmp_path, [json.dumps(GOOD_ALPACA)], eval_fraction=0.6)
    assert "data.eval_fraction" in validate(spec).output


def test_eval_steps_needs_eval_data(tmp_path):
    spec = yaml.safe_load(open(spec_with(tmp_path, [json.dumps(GOOD_ALPACA)])))
    spec["training"]["eval_steps"] = 2
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    output = validate(tmp_path / "spec.yaml").output
    assert "there is no eval data to compute eval_loss on [eval_without_data]" in output


def test_validate_streams_a_large_file_fast(tmp_path):
    """100k rows (about 10 MB), one bad row near the end: found, named by its line, in well under a second."""
    path = tmp_path / "big.jsonl"
    good = json.dumps({"instruction": "Spell the word backwards, please. " * 2, "input": "cat " * 4,
                       "output": "tac " * 4}) + "\n"
    lines = [good] * 100_000
    lines[97_531] = json.dumps({"instruction": "x", "response": "y"}) + "\n"
    path.write_text("".join(lines))
    size_mb = path.stat().st_size / 1e6
    start = time.perf_counter()
    problems, bad = scan_file(str(path), "alpaca", {})
    seconds = time.perf_counter() - start
    assert bad == 1 and problems[0][0] == 97_532
    assert seconds / size_mb * 10 < 1.0, f"{seconds:.2f}s for {size_mb:.1f} MB"


def test_row_checks_stay_in_the_light_core():
    code = ("import sys; from qcompile.compiler import data_checks; "
            "assert not {'torch', 'datasets', 'transformers'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
