"""Validation, planning and emitting run where torch and friends cannot even be imported."""

import subprocess
import sys

from tests.conftest import REPO, TESTS

BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'transformers', 'deepspeed', 'peft', 'accelerate', 'safetensors'}:
            raise ImportError(f'{name} is blocked: the light core must not import it')
sys.meta_path.insert(0, Block())
from qcompile.cli.main import main
sys.argv = ['qcompile'] + sys.argv[1:]
main()
"""


def qcompile_without_torch(*args, cwd):
    return subprocess.run([sys.executable, "-c", BLOCKER, *args], cwd=cwd, capture_output=True, text=True)


def test_validate_and_emit_without_torch(tmp_path):
    spec = TESTS / "specs" / "deepspeed-zero2.yaml"
    result = qcompile_without_torch("validate", str(spec), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = qcompile_without_torch(str(spec), "--emit", "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "train.py").exists()


def test_importing_the_compiler_loads_no_torch():
    code = ("import sys, qcompile.compiler.emit, qcompile.compiler.load, qcompile.compiler.planner;"
            "heavy = {'torch', 'transformers', 'deepspeed', 'peft', 'accelerate'} & set(sys.modules);"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
