"""The generated scripts are clean Python: no unused names, undefined names or syntax errors."""

import subprocess
import sys

import pytest

from tests.conftest import TESTS


def test_generated_scripts_pass_pyflakes_rules():
    pytest.importorskip("ruff")
    scripts = sorted(str(p) for p in (TESTS / "golden").glob("*/train.py"))
    assert len(scripts) >= 4
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated",
                             "--select", "F,E9", *scripts], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
