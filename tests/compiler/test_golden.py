"""Golden files: tests/specs/<case>.yaml emits exactly tests/golden/<case>/* (run with --update-golden)."""

import hashlib
import json

import pytest

from qcompile.compiler.emit import emit
from tests.conftest import REPO, TESTS, compare_golden

SPECS = TESTS / "specs"
CASES = ["deepspeed-zero2", "deepspeed-zero3", "accelerate-offload", "naive-model-parallel"]


def normalised(text: str) -> str:
    """Absolute paths differ per checkout; golden files hold placeholders instead."""
    return text.replace(str(SPECS), "{SPEC_DIR}").replace(str(REPO), "{REPO}")


def golden_text(build_dir, name: str) -> str:
    """A file as the golden copy holds it; the manifest's hashes are those of the normalised files."""
    if name != "manifest.json":
        return normalised((build_dir / name).read_text())
    manifest = json.loads((build_dir / name).read_text())
    manifest["files"] = {f: hashlib.sha256(golden_text(build_dir, f).encode()).hexdigest() for f in manifest["files"]}
    return json.dumps(manifest, sort_keys=True, indent=2) + "\n"


@pytest.mark.parametrize("case", CASES)
def test_emitted_files_match_golden(case, tmp_path, update_golden):
    result = emit(SPECS / f"{case}.yaml", tmp_path / case)
    golden = TESTS / "golden" / case
    names = sorted(p.name for p in (tmp_path / case).iterdir())
    if not update_golden:
        assert names == sorted(p.name for p in golden.iterdir())
    for name in names:
        compare_golden(golden / name, golden_text(tmp_path / case, name), update_golden)
    assert result.build.backend == case


@pytest.mark.parametrize("example", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_example_validates_and_emits(example, tmp_path):
    result = emit(example, tmp_path / "out")
    assert {"train.py", "train_config.json", "launch.sh", "accelerate_config.yaml"} <= set(result.build.files)
