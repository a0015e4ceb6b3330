"""One exit-code scheme: 0 success, 1 the user's mistake (spec, refused run, command-line usage),
2 an internal failure of qcompile. Checked through real processes, as scripts and CI see them."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from qcompile.cli.main import cli
from tests.conftest import TESTS

GOOD = TESTS / "specs" / "naive-model-parallel.yaml"


def qcompile(*args):
    return subprocess.run([sys.executable, "-m", "qcompile", *map(str, args)], capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize("args", [
    ["--no-such-option"],
    ["validate", "--format", "xml", GOOD],
    ["run"],  # missing SPEC
    ["run", GOOD, "--nope"],
    ["plan", GOOD, "--backend", "no-such-backend"],
    [],
])
def test_usage_errors_are_the_users_mistake(args):
    result = qcompile(*args)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_success_and_spec_errors():
    assert qcompile("validate", GOOD).returncode == 0
    assert qcompile("--version").returncode == 0 and qcompile("--help").returncode == 0
    bad = qcompile("validate", TESTS / "specs" / "invalid" / "out_of_range.yaml")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr


def test_internal_failures_exit_two(monkeypatch, tmp_path):
    import qcompile.cli.compile as compile_module

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(compile_module, "emit", broken)
    result = CliRunner().invoke(cli, [str(GOOD), "--emit", "-o", str(tmp_path / "b")])
    assert result.exit_code == 2 and "internal error: RuntimeError: a bug" in result.output
