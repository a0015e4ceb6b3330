"""Shared test switches: `--update-golden` rewrites golden files instead of comparing them."""

from pathlib import Path

import pytest

TESTS = Path(__file__).parent
REPO = TESTS.parent


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden and .err files")


@pytest.fixture
def update_golden(request) -> bool:
    return bool(request.config.getoption("--update-golden"))


def compare_golden(path: Path, actual: str, update: bool) -> None:
    """Assert `actual` equals the golden file, or rewrite it under --update-golden."""
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    assert path.exists(), f"missing golden file {path}; run pytest --update-golden"
    assert actual == path.read_text(), f"{path} differs; review and run pytest --update-golden"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """The tiny example model (examples/models/tiny-qwen2), created once per session."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.training.jobs import tiny_model

    return tiny_model(tmp_path_factory.getbasetemp())
