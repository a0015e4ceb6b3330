"""The package, its tests and benchmarks pass ruff with the rules in pyproject.toml."""

import subprocess
import sys

import pytest

from tests.conftest import REPO


def test_the_repository_passes_ruff():
    pytest.importorskip("ruff")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
