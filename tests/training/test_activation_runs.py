"""Real runs of the tiny model with the chunked loss, activation offload and compression, through the
emitted launch.sh: the chunked loss's first step equals the standard one's and both converge; offload
with compression converges, with checkpointing, under the DeepSpeed engine, and resumes from its
checkpoint. (naive-model-parallel's own resume with layers on disk fails before any strategy is
involved: "Cannot copy out of meta tensor".)"""

import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from .jobs import metrics  # noqa: E402
from .test_train_runs import assert_loss_falls, run_example  # noqa: E402

pytestmark = pytest.mark.slow
LONGER = {"max_steps": 6, "save_steps": 3, "gradient_accumulation_steps": 1}


def test_chunked_loss_matches_the_standard_loss_and_converges(tmp_path, model_dir):
    standard, _ = run_example(tmp_path, "naive-mp-cpu.yaml", "standard", training=dict(LONGER))
    chunked, lines = run_example(tmp_path, "naive-mp-cpu.yaml", "chunked", training=dict(LONGER),
                                 strategies={"loss": "chunked", "loss_chunk_size": 16})
    assert any("loss: chunked, 16 tokens per chunk" in line for line in lines)
    first = [metrics(out)[0]["loss"] for out in (standard, chunked)]
    assert first[1] == pytest.approx(first[0], rel=1e-5)
    assert_loss_falls(standard)
    assert_loss_falls(chunked)


def test_offload_and_compression_converge_and_resume(tmp_path, model_dir):
    strategies = {"activation_offload": True, "activation_compression": "int8", "gradient_checkpointing": True}
    one = {"devices_per_node": 1}
    out, lines = run_example(tmp_path, "zero2-cpu.yaml", "hooks", training=dict(LONGER), strategies=strategies,
                             hardware=one)
    assert any("saved activations: compression int8, offload on" in line for line in lines)
    assert_loss_falls(out)
    shutil.rmtree(out / "checkpoints" / "checkpoint-6")  # as if the run had stopped after step 3's checkpoint
    out, lines = run_example(tmp_path, "zero2-cpu.yaml", "hooks", resume=True, training=dict(LONGER),
                             strategies=strategies, hardware=one)
    assert any("resuming from" in line and "checkpoint-3" in line for line in lines)
    assert (out / "checkpoints" / "checkpoint-6").is_dir() and (out / "adapter_model.safetensors").exists()
