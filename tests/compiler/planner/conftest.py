"""Specs for planner tests, built from the shipped 72B example."""

from pathlib import Path

import pytest
import yaml

from qcompile.compiler.context import CompileContext
from qcompile.schemas.spec import Spec

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "qwen72b-lora.yaml"


def spec_from(path: Path = EXAMPLE, **changes) -> Spec:
    """The spec at `path` with dotted-key changes, e.g. spec_from(**{"model.dtype": "float32"})."""
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return Spec.model_validate(data)


@pytest.fixture
def qwen72b() -> Spec:
    return spec_from()


def context(spec: Spec, spec_dir: Path = EXAMPLE.parent) -> CompileContext:
    """The compile context the loader would build for `spec` in `spec_dir`."""
    return CompileContext.build(spec, spec_dir)
