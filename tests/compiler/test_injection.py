"""Spec strings stay inert data: hostile names never become code in any artifact."""

import ast
import json
import subprocess

import jinja2
import pytest

from qcompile.compiler.emit import compile_spec, emit
from qcompile.compiler.launch import resolve_argv
from qcompile.compiler.load import load_spec
from qcompile.compiler.render import render
from tests.conftest import REPO, TESTS

REPO_EXAMPLES = REPO / "examples"

HOSTILE = ["__import__('os')", "{{ 7*7 }}", "touch PWNED", "{% raw %}", "''.__class__"]


def test_hostile_strings_reach_only_data_files(tmp_path):
    loaded = load_spec(TESTS / "specs" / "injection.yaml", memory_check=False)
    build = compile_spec(loaded)
    train_py = build.files["train.py"].decode()
    ast.parse(train_py)
    for needle in HOSTILE:
        assert needle not in train_py
    benign = compile_spec(load_spec(TESTS / "specs" / "naive-model-parallel.yaml", memory_check=False))
    assert build.files["train.py"] == benign.files["train.py"]  # only structure reaches the script
    values = set(_strings(json.loads(build.files["train_config.json"])))
    assert loaded.spec.model.name in values  # kept verbatim, as data
    assert loaded.spec.model.revision in values


def _strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def test_launch_script_quotes_every_argument(tmp_path):
    """launch.sh runs the backend's argv with the interpreter in $PYTHON, every argument intact."""
    result = emit(TESTS / "specs" / "injection.yaml", tmp_path / "out", memory_check=False)
    python = tmp_path / "python"  # stands in for the interpreter: prints the arguments it gets
    python.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    python.chmod(0o755)
    extra = ["--resume", "$(touch PWNED)"]
    done = subprocess.run(["bash", str(tmp_path / "out" / "launch.sh"), *extra], cwd=tmp_path, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "PYTHON": str(python)}, check=True)
    assert done.stdout.splitlines() == resolve_argv(result.build.argv, False, python="")[1:] + extra
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "out" / "PWNED").exists()


@pytest.mark.parametrize("expression", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ self.__init__.__globals__ }}",
])
def test_sandbox_refuses_escapes(tmp_path, monkeypatch, expression):
    from qcompile.compiler import render as render_module

    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "evil.j2").write_text(expression)
    env = render_module.environment()
    monkeypatch.setattr(env, "loader", jinja2.FileSystemLoader(str(folder)))
    with pytest.raises((jinja2.exceptions.SecurityError, jinja2.exceptions.UndefinedError)):
        render("evil.j2", {})


def test_capable_objects_cannot_enter_a_template():
    from pathlib import Path

    with pytest.raises(TypeError):
        render("launch.sh.j2", {"command": Path("/bin/sh")})


def test_undefined_variables_fail_loudly():
    with pytest.raises(jinja2.exceptions.UndefinedError):
        render("launch.sh.j2", {})


def test_launch_script_keeps_the_callers_environment(tmp_path):
    """The backend's environment fills in what the caller has not set; the caller's own values win."""
    emit(REPO_EXAMPLES / "zero2-cpu.yaml", tmp_path / "out", memory_check=False)
    python = tmp_path / "python"
    python.write_text('#!/bin/sh\necho "DS_ACCELERATOR=$DS_ACCELERATOR OMP_NUM_THREADS=$OMP_NUM_THREADS"\n')
    python.chmod(0o755)
    base = {"PATH": "/usr/bin:/bin", "PYTHON": str(python)}
    run = lambda env: subprocess.run(["bash", str(tmp_path / "out" / "launch.sh")], capture_output=True,  # noqa: E731
                                     text=True, env={**base, **env}, check=True).stdout.strip()
    assert run({}) == "DS_ACCELERATOR=cpu OMP_NUM_THREADS=1"
    assert run({"OMP_NUM_THREADS": "4"}) == "DS_ACCELERATOR=cpu OMP_NUM_THREADS=4"
