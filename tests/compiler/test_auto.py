"""`backend: auto`: chosen from the memory plan, and held to the chosen backend's own rules."""

import pytest

from qcompile.compiler.diagnostics import SpecError
from qcompile.compiler.emit import compile_spec
from qcompile.compiler.load import load_spec

BASE = """
version: 1
model: {{name: {model}}}
hardware: {{devices_per_node: 8, device_memory: 80GiB, host_memory: 1007GB}}
strategies: {{offload: {{optimizer: {optimizer}, params: none}}}}
backend: auto
data: {{path: train.jsonl}}
training: {{output_dir: runs/x, global_batch_size: {batch}}}
"""


def write(tmp_path, model="Qwen/Qwen1.5-72B-Chat", optimizer="none", batch=8):
    path = tmp_path / "spec.yaml"
    path.write_text(BASE.format(model=model, optimizer=optimizer, batch=batch))
    return path


def test_auto_chooses_a_fitting_backend_for_72b(tmp_path):
    build = compile_spec(load_spec(write(tmp_path)))
    assert build.backend == "deepspeed-zero3"


def test_auto_applies_each_candidates_batch_rule(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, batch=5))
    (diag,) = [d for d in info.value.diagnostics if d.is_error]
    assert diag.code == "auto_nothing_accepts"
    assert any(note.startswith("deepspeed-zero3 fits but: 5 != micro_batch_size 1") for note in diag.notes)


def test_auto_skips_backends_whose_rules_refuse_the_spec(tmp_path):
    # Optimizer offload is DeepSpeed's: auto must not fall back on a backend that cannot do it.
    build = compile_spec(load_spec(write(tmp_path, optimizer="cpu")))
    assert build.backend.startswith("deepspeed-")


def test_auto_without_a_known_architecture_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, model="someone/unknown-model"))
    (diag,) = [d for d in info.value.diagnostics if d.is_error]
    assert diag.code == "auto_needs_architecture" and "model.config" in diag.hint
    assert (diag.line, diag.col) == (6, 10)
