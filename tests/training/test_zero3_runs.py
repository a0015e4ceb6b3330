"""deepspeed-zero3 on CPU (gloo): partitioned load, training, the gathered adapter, kill -9 + resume."""

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("deepspeed")

from .jobs import adapter, compile_job, launch, start  # noqa: E402
from .test_train_runs import (  # noqa: E402
    assert_adapter_loads_and_changes_outputs,
    assert_loss_falls,
    kill_after_checkpoint,
)

pytestmark = pytest.mark.slow

EXAMPLE = "zero3-cpu.yaml"
# dropout draws random numbers every step: resume must restore the RNG state to match
TWO_RANKS = {"lora": {"dropout": 0.1}}
STEPS = {"max_steps": 12}  # checkpoints at 4, 8 and 12: the kill test stops the run after the first


def run(tmp_path, name: str, resume: bool = False, **overrides):
    overrides = {**overrides, "training": {**overrides.get("training", {}), "output_dir": str(tmp_path / name / "out")}}
    lines = []
    result = launch(compile_job(tmp_path / name, EXAMPLE, **overrides), resume=resume, echo=lines.append)
    assert result.returncode == 0, "\n".join(lines[-40:])
    return tmp_path / name / "out", lines


def partitions(lines) -> dict[int, dict]:
    found = [json.loads(line.split("zero3 partition: ", 1)[1]) for line in lines if "zero3 partition: " in line]
    return {p["rank"]: p for p in found}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, model_dir):
    root = tmp_path_factory.mktemp("zero3")
    output_dir, lines = run(root, "full", training=STEPS, **TWO_RANKS)
    return root, output_dir, lines


def test_each_of_two_ranks_loads_half_of_every_weight(two_ranks, model_dir):
    _, _, lines = two_ranks
    shards = partitions(lines)
    assert sorted(shards) == [0, 1], lines[-20:]  # printed by each rank right after from_pretrained
    from safetensors.torch import load_file

    total = sum(t.numel() for t in load_file(str(model_dir / "model.safetensors")).values())
    for shard in shards.values():
        assert shard["frozen_numel"] == total
        assert 0.5 <= shard["min_share"] <= shard["max_share"] <= 0.51  # half of every tensor, up to padding
    tensors = len(load_file(str(model_dir / "model.safetensors")))
    assert sum(s["local_numel"] for s in shards.values()) - total < 2 * tensors


def test_two_ranks_learn_and_save_the_trained_adapter(two_ranks, model_dir):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    _, output_dir, _ = two_ranks
    assert_loss_falls(output_dir)
    saved = adapter(output_dir)
    assert saved and (output_dir / "adapter_model.safetensors").stat().st_size > 10_000  # not the empty trap
    assert all(saved[k].abs().max() > 0 for k in saved if "lora_B" in k)  # B starts at zero: it trained
    # the adapter equals the fp32 weights reassembled from the two ranks' ZeRO-3 partitions
    checkpoint = output_dir / "checkpoints" / "checkpoint-12"
    trained = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), exclude_frozen_parameters=True)
    trained = {k.replace(".default.", "."): v for k, v in trained.items()}
    assert trained.keys() == saved.keys()
    for key in saved:
        torch.testing.assert_close(saved[key], trained[key], rtol=0, atol=0)
    # each rank's optimizer file holds half of the LoRA master weights
    shards = sorted((checkpoint / "global_step12").glob("*optim_states.pt"))
    states = [torch.load(s, map_location="cpu", weights_only=False)["optimizer_state_dict"] for s in shards]
    assert [state["partition_count"] for state in states] == [2, 2]
    sizes = [sum(t.numel() for t in state["fp32_flat_groups"]) for state in states]
    assert len(sizes) == 2 and sizes[0] == sizes[1] and sum(sizes) - sum(t.numel() for t in saved.values()) < 2 * 16
    assert_adapter_loads_and_changes_outputs(output_dir, model_dir)


def test_kill_9_then_resume_matches_uninterrupted_run(two_ranks):
    root, full, _ = two_ranks
    killed = root / "killed"
    job = compile_job(killed, EXAMPLE, **TWO_RANKS, training={**STEPS, "output_dir": str(killed / "out")})
    kill_after_checkpoint(start(job), root / "killed" / "out", 4)

    resumed, lines = run(root, "killed", resume=True, training=STEPS, **TWO_RANKS)
    assert any("resuming from" in line and ("checkpoint-4" in line or "checkpoint-8" in line) for line in lines)
    a, b = adapter(full), adapter(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_one_rank_with_parameter_offload(tmp_path, model_dir):
    output_dir, lines = run(tmp_path, "one", hardware={"devices_per_node": 1},
                            strategies={"offload": {"optimizer": "cpu", "params": "cpu"}})
    assert partitions(lines)[0]["min_share"] == 1.0  # one rank holds everything
    assert_loss_falls(output_dir)
    assert_adapter_loads_and_changes_outputs(output_dir, model_dir)
