import pytest

from .jobs import tiny_model


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return tiny_model(tmp_path_factory.getbasetemp())
