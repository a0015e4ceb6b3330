"""Every hostile input ends in exit 1 with one clear error, no traceback, and the disk unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil

import pytest
import yaml
from click.testing import CliRunner

from qcompile.cli.main import cli
from tests.conftest import TESTS

from .corpus import CASES, Case

BASE = TESTS / "specs" / "accelerate-offload.yaml"
ERROR_LINE = re.compile(r"(^|: )error: ", re.MULTILINE)


def _set(data: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        if not isinstance(data.get(key), dict):
            data[key] = {"kind": data[key]} if key == "backend" and isinstance(data.get(key), str) else {}
        data = data[key]
    data[leaf] = value


def _fill(value: object, work: str) -> object:
    if isinstance(value, str):
        return value.replace("{work}", work)
    if isinstance(value, dict):
        return {k: _fill(v, work) for k, v in value.items()}
    return value


def workspace(tmp_path, case: Case):
    """A spec folder with the tiny model's config, the data, a home folder, and the case's own files."""
    work = tmp_path / "work"
    shutil.copytree(TESTS / "specs" / "models", work / "models")
    shutil.copytree(TESTS / "specs" / "data", work / "data")
    (work / "home").mkdir()
    (work / "home" / "thesis.tex").write_text("precious\n")
    for name, content in case.files.items():
        target = work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.mkdir() if content is None else target.write_bytes(content)
    data = yaml.safe_load(BASE.read_text())
    for dotted, value in case.edits.items():
        _set(data, dotted, _fill(value, str(work)))
    if case.config is not None:
        config = json.loads((work / "models" / "tiny-qwen2" / "config.json").read_text())
        (work / "models" / "bad").mkdir()
        (work / "models" / "bad" / "config.json").write_text(json.dumps({**config, **case.config}))
        data["model"]["config"] = "models/bad/config.json"
    for index, dotted in enumerate(case.raw):
        _set(data, dotted, f"RAW{index}RAW")
    text = yaml.safe_dump(data, sort_keys=False, width=10**6)
    for index, value in enumerate(case.raw.values()):
        text = text.replace(f"RAW{index}RAW", value)
    (work / "spec.yaml").write_text(text)
    return work


def snapshot(root) -> dict:
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            digest = None
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as fh:
                    digest = hashlib.sha256(fh.read()).hexdigest()
            out[os.path.relpath(path, root)] = (info.st_mode, info.st_size, info.st_mtime_ns, digest)
    return out


ARGS = {
    "validate": ["validate", "spec.yaml"],
    "emit": ["spec.yaml", "--emit", "-o", "build"],
    "run": ["run", "spec.yaml", "-o", "build"],
    "dry-run": ["run", "spec.yaml", "-o", "build", "--dry-run"],
    "resume": ["run", "spec.yaml", "-o", "build", "--resume"],
}


def test_the_corpus_is_large_and_its_names_unique():
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_is_one_clear_error(tmp_path, monkeypatch, case):
    work = workspace(tmp_path, case)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(work / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-hf-cache"))
    before = snapshot(tmp_path)
    result = CliRunner().invoke(cli, ARGS[case.command])
    output = result.output
    assert result.exit_code == 1, output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output and "internal error" not in output
    assert len(ERROR_LINE.findall(output)) == 1, output
    assert case.expect in output, output
    assert max(len(line) for line in output.splitlines()) < 1000, "an error line should not echo huge input"
    assert snapshot(tmp_path) == before, "a refused input changed files on disk"
