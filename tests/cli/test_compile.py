"""`qcompile SPEC --emit`: the build directory, written safely and deterministically."""

import hashlib
import json

from click.testing import CliRunner

from qcompile.cli.main import cli
from tests.conftest import TESTS

SPEC = TESTS / "specs" / "naive-model-parallel.yaml"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_emit_twice_is_byte_identical(tmp_path):
    assert run(SPEC, "--emit", "-o", tmp_path / "a").exit_code == 0
    assert run(SPEC, "--emit", "-o", tmp_path / "b").exit_code == 0
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_manifest_lists_every_file_with_its_hash(tmp_path):
    import hashlib

    assert run(SPEC, "--emit", "-o", tmp_path).exit_code == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["generator"] == "qcompile"
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest
    assert manifest["spec"]["sha256"] == hashlib.sha256(SPEC.read_bytes()).hexdigest()


def test_refuses_a_directory_it_did_not_write(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    result = run(SPEC, "--emit", "-o", tmp_path)
    assert result.exit_code == 1
    assert "not written by qcompile" in result.output and "--force" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]
    assert run(SPEC, "--emit", "-o", tmp_path, "--force").exit_code == 0
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_reemit_keeps_user_files_and_drops_its_own_stale_ones(tmp_path):
    assert run(SPEC, "--emit", "-o", tmp_path).exit_code == 0
    (tmp_path / "notes.txt").write_text("mine")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["files"]["old_artifact.json"] = hashlib.sha256(b"{}").hexdigest()
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "old_artifact.json").write_text("{}")
    assert run(SPEC, "--emit", "-o", tmp_path).exit_code == 0
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "old_artifact.json").exists()


def test_reemit_never_loses_an_edited_file(tmp_path):
    assert run(SPEC, "--emit", "-o", tmp_path).exit_code == 0
    generated = (tmp_path / "train.py").read_text()
    (tmp_path / "train.py").write_text(generated + "# my change\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = run(SPEC, "--emit", "-o", tmp_path)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{tmp_path / 'train.py'} changed since qcompile wrote it" in result.output and "--force" in result.output
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing written at all
    assert run(SPEC, "--emit", "-o", tmp_path, "--force").exit_code == 0
    assert (tmp_path / "train.py").read_text() == generated
    assert (tmp_path / "train.py.orig").read_text() == generated + "# my change\n"
    assert run(SPEC, "--emit", "-o", tmp_path).exit_code == 0  # the .orig is the user's; the rest is ours again


def test_reemit_never_removes_an_edited_stale_file(tmp_path):
    assert run(SPEC, "--emit", "-o", tmp_path).exit_code == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["files"]["old_artifact.json"] = hashlib.sha256(b"{}").hexdigest()
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "old_artifact.json").write_text('{"edited": true}')
    assert run(SPEC, "--emit", "-o", tmp_path).exit_code == 1
    assert (tmp_path / "old_artifact.json").read_text() == '{"edited": true}'


def test_bad_spec_exits_one_without_traceback(tmp_path):
    result = run(TESTS / "specs" / "invalid" / "out_of_range.yaml", "--emit", "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "lora.r: must be greater than 0" in result.output
    assert not (tmp_path / "out").exists()


def test_internal_failure_exits_two(tmp_path, monkeypatch):
    import qcompile.cli.compile as command

    def boom(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(command, "emit", boom)
    result = run(SPEC, "--emit", "-o", tmp_path)
    assert result.exit_code == 2
    assert "internal error: RuntimeError: simulated bug" in result.output and "Traceback" not in result.output
