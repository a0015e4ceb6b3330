"""The generated train.py is assembled from plain Python parts (templates/script/*.py): the parts are linted
as source, each backend's script carries exactly its parts, and nothing in templates/ names a backend."""

import ast
import subprocess
import sys

import pytest

from qcompile.backends.registry import BUILTINS as BACKENDS
from qcompile.compiler import script
from qcompile.compiler.render import render_train_script
from tests.conftest import REPO

TEMPLATES = REPO / "templates"


def test_script_parts_pass_ruff_with_the_project_rules():
    pytest.importorskip("ruff")
    folder = str(TEMPLATES / "script")
    for extra in ([], ["--extend-select", "E501"]):  # the project's rules, and lines of at most 120 characters
        done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *extra, folder], cwd=REPO,
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_templates_decide_nothing_by_backend_kind():
    texts = {p: p.read_text() for p in TEMPLATES.rglob("*") if p.suffix in (".j2", ".py")}
    assert any(p.name == "train.py.j2" for p in texts)
    for path, text in texts.items():
        assert "backend ==" not in text and "backend in" not in text, path
        for kind in BACKENDS:
            assert kind not in text, (path, kind)


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_each_backend_script_is_one_module_of_its_parts_only(kind):
    parts = script.assembled(list(BACKENDS[kind].script_parts))  # the data parts follow core in every job
    text = render_train_script("9.9", kind, list(BACKENDS[kind].script_parts))
    tree = ast.parse(text)
    banners = [line.split()[-1] for line in text.splitlines() if line.startswith(script.BANNER + " ")]
    assert banners == parts
    assert f"`{kind}` backend" in ast.get_docstring(tree)
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not [n for n in imports if isinstance(n, ast.ImportFrom) and n.level]  # the parts are one module now
    modules = {a.name for n in imports if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in imports if isinstance(n, ast.ImportFrom)}
    assert not [m for m in modules if m.split(".")[0] == "qcompile"]  # runs without qcompile
    defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert len(defined) == len(set(defined))
    own = set().union(*(script.read_part(p).defines for p in parts))
    for other in set(script.known_parts()) - set(parts):  # the code of parts the backend does not name stays out
        assert not (script.read_part(other).defines - own) & set(defined), other


def test_part_imports_are_merged_at_the_top_once():
    block = script.import_block(["core", "staggered_load", "placement"])
    lines = block.splitlines()
    assert lines[0] == "import argparse" and "from accelerate import infer_auto_device_map, init_empty_weights" in lines
    assert block.count("AutoModelForCausalLM") == 1  # imported by two parts, once in train.py
    assert "from transformers import (" in lines  # too long for one line: one name per line
    stdlib_end = lines.index("")
    assert all(line.split()[1].split(".")[0] in sys.stdlib_module_names for line in lines[:stdlib_end])


@pytest.mark.parametrize("parts, message", [
    (["core", "nonsense"], "no script part 'nonsense'; known: adalora, chunked_loss, core, "),
    (["core", "../core"], "no script part '../core'"),
    (["placement", "core"], "must start with 'core'"),
    (["core", "placement", "placement"], "repeat a name"),
])
def test_bad_part_lists_are_refused_clearly(parts, message):
    with pytest.raises(script.ScriptPartError, match=message.replace("(", r"\(").replace(".", r"\.")):
        render_train_script("9.9", "x", parts)


def write_part(folder, name: str, source: str):
    (folder / f"{name}.py").write_text(source)


@pytest.fixture
def part_folder(tmp_path, monkeypatch):
    """A scratch parts folder in place of templates/script."""
    for name in ("core", *script.EVERY_JOB):
        write_part(tmp_path, name, (TEMPLATES / "script" / f"{name}.py").read_text())
    monkeypatch.setattr(script, "part_folder", lambda: tmp_path)
    script.read_part.cache_clear()
    yield tmp_path
    script.read_part.cache_clear()


def test_a_part_that_imports_qcompile_is_refused(part_folder):
    write_part(part_folder, "leaky", '"""Leaks."""\n\nfrom qcompile.compiler import script\n\nX = script\n')
    with pytest.raises(script.ScriptPartError, match="leaky.py:3: a part may not import qcompile"):
        script.parts(["core", "leaky"])


def test_two_parts_defining_one_name_are_refused(part_folder):
    write_part(part_folder, "again", '"""Twice."""\n\n\ndef log(message):\n    return message\n')
    with pytest.raises(script.ScriptPartError, match="core and again both define 'log'"):
        script.parts(["core", "again"])


def test_a_part_is_never_read_as_jinja(part_folder):
    write_part(part_folder, "braces", '"""Braces."""\n\nTEXT = "{{ 7*7 }} {% if x %}"\n')
    text = render_train_script("9.9", "x", ["core", "braces"])
    assert 'TEXT = "{{ 7*7 }} {% if x %}"' in text
