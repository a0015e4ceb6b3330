"""A plain `qcompile validate` command line runs without click (cli/validate_core.py) and must print and exit
exactly as the click command does; anything the plain reader is unsure of goes to click."""

import shutil
import subprocess
import sys

import click
import pytest

from qcompile.cli import validate_core
from qcompile.cli.validate import validate as validate_command
from tests.conftest import REPO, TESTS

SPECS = TESTS / "specs"
THROUGH_CLICK = "import sys; from qcompile.cli.main import cli; cli(sys.argv[1:], prog_name='qcompile')"
PLAIN = "import sys; from qcompile.cli.main import main; sys.argv[0] = 'qcompile'\n"
CHECK_PLAIN = PLAIN + "try:\n    main()\nfinally:\n    assert 'click' not in sys.modules, 'click imported'"


def both(*args, cwd=REPO, without_click=True):
    """(plain, through click): the same command line run both ways, as separate processes."""
    code = CHECK_PLAIN if without_click else PLAIN + "main()"
    plain = subprocess.run([sys.executable, "-c", code, "validate", *map(str, args)], cwd=cwd,
                           capture_output=True, text=True)
    clicked = subprocess.run([sys.executable, "-c", THROUGH_CLICK, "validate", *map(str, args)], cwd=cwd,
                             capture_output=True, text=True)
    return plain, clicked


@pytest.fixture
def folder(tmp_path):
    shutil.copytree(SPECS / "invalid", tmp_path / "specs" / "bad")
    shutil.copytree(SPECS / "models", tmp_path / "specs" / "models")
    shutil.copytree(SPECS / "data", tmp_path / "specs" / "data")
    shutil.copy(SPECS / "deepspeed-zero2.yaml", tmp_path / "specs" / "good.yaml")
    # a value carrying terminal escape codes: click strips them from what it prints; so must the plain path
    text = (SPECS / "naive-model-parallel.yaml").read_text().replace("lora:\n", "lora:\n  \"\\e[31mbogus\\e[0m\": 1\n")
    (tmp_path / "escapes.yaml").write_text(text)
    shutil.copytree(SPECS / "data", tmp_path / "data")
    (tmp_path / "empty").mkdir()
    return tmp_path


@pytest.mark.parametrize("args", [
    ["specs/good.yaml"],
    ["specs"],
    ["--format", "json", "specs/bad/wrong_types.yaml", "specs/good.yaml"],
    ["specs", "--format", "github", "--exclude", "bad/empty*", "--exclude", "models"],
    ["--format", "sarif", "--include", "*.yaml", "--include", "*.yml", "specs/bad"],
    ["specs/good.yaml", "--no-data-check", "--no-memory-check"],
    ["missing.yaml", "empty"],
])
def test_plain_and_click_print_and_exit_alike(folder, args):
    plain, clicked = both(*args, cwd=folder)
    assert plain.returncode == clicked.returncode, (plain.stderr, clicked.stderr)
    assert plain.stdout == clicked.stdout
    assert plain.stderr == clicked.stderr
    assert plain.stdout or plain.stderr
    assert "\x1b" not in plain.stdout + plain.stderr


def test_escape_codes_in_a_spec_are_removed_by_click_in_both(folder):
    plain, clicked = both("escapes.yaml", "--no-memory-check", cwd=folder, without_click=False)
    assert "lora.bogus: unknown key" in plain.stdout and "\x1b" not in plain.stdout
    assert (plain.stdout, plain.stderr, plain.returncode) == (clicked.stdout, clicked.stderr, clicked.returncode)


@pytest.mark.parametrize("args", [
    [], ["--help"], ["-h", "x.yaml"], ["--format=json", "x.yaml"], ["--format", "xml", "x.yaml"],
    ["--format", "json", "--format", "text", "x.yaml"], ["--bogus", "x.yaml"], ["-"], ["x.yaml", "--include"],
    ["x.yaml", "--include", "--exclude"], [""], ["--", "x.yaml"],
])
def test_what_the_plain_reader_is_unsure_of_goes_to_click(args):
    assert validate_core.plain_args(args) is None


def test_a_usage_error_still_reads_as_click_says_it(tmp_path):
    result = subprocess.run([sys.executable, "-m", "qcompile", "validate", "--format", "xml", "x.yaml"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1
    assert "Invalid value for '--format': 'xml' is not one of" in result.stderr


def test_plain_reader_knows_exactly_the_commands_options():
    params = {p.name: p for p in validate_command.params}
    for option, (name, takes_value, repeatable) in validate_core.OPTIONS.items():
        param = params.pop(name)
        assert option in param.opts and param.is_flag is not takes_value and param.multiple is repeatable
    assert list(params) == ["paths"] and params["paths"].nargs == -1
    fmt = next(p for p in validate_command.params if p.name == "fmt")
    assert isinstance(fmt.type, click.Choice) and tuple(fmt.type.choices) == validate_core.FORMATS
    assert validate_core.plain_args(["a.yaml", "--include", "*.yml", "--include", "x", "--no-data-check"]) == {
        "paths": ("a.yaml",), "fmt": "text", "include": ("*.yml", "x"), "exclude": (),
        "no_memory_check": False, "no_data_check": True}
