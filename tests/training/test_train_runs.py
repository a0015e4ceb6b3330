"""Real LoRA training of the tiny model: each spec compiled as `qcompile run` does and started through its
emitted launch.sh (the backend's real launcher), a few steps each."""

import os
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("deepspeed")
pytest.importorskip("accelerate")

from .jobs import adapter, compile_job, launch, metrics, start  # noqa: E402

pytestmark = pytest.mark.slow


def run_example(tmp_path, example: str, name: str = "job", resume: bool = False, **overrides):
    overrides.setdefault("training", {})["output_dir"] = str(tmp_path / name / "out")
    job = compile_job(tmp_path / name, example, **overrides)
    lines = []
    result = launch(job, resume=resume, echo=lines.append)
    assert result.returncode == 0, "\n".join(lines[-40:])
    return tmp_path / name / "out", lines


def assert_loss_falls(output_dir):
    losses = [m["loss"] for m in metrics(output_dir)]
    assert len(losses) >= 4 and sum(losses[-2:]) < sum(losses[:2]), losses


def assert_adapter_loads_and_changes_outputs(output_dir, model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.arange(10, 40).unsqueeze(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        before = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, str(output_dir)).eval()
        after = tuned(input_ids=ids).logits
    assert (after - before).abs().max() > 1e-3


def test_zero2_two_ranks_partitions_and_learns(tmp_path, model_dir):
    output_dir, lines = run_example(tmp_path, "zero2-cpu.yaml")
    assert any(line.startswith("[default1]:") for line in lines)  # two real ranks
    assert_loss_falls(output_dir)
    assert_adapter_loads_and_changes_outputs(output_dir, model_dir)
    # ZeRO-2: each rank's optimizer file holds half of the fp32 master copy of the LoRA weights
    trainable = sum(t.numel() for t in adapter(output_dir).values())
    shards = sorted((output_dir / "checkpoints" / "checkpoint-8" / "global_step8").glob("*optim_states.pt"))
    assert len(shards) == 2, sorted(str(p) for p in output_dir.rglob("*"))
    sizes = []
    for shard in shards:
        state = torch.load(shard, map_location="cpu", weights_only=False)["optimizer_state_dict"]
        assert state["partition_count"] == [2]
        sizes.append(sum(t.numel() for t in state["single_partition_of_fp32_groups"]))
    assert sizes[0] == sizes[1] and sum(sizes) - trainable < 2 * 16  # halves, up to alignment padding


def kill_tree(process):
    import psutil

    parent = psutil.Process(process.pid)
    for proc in [parent, *parent.children(recursive=True)]:  # torchrun's workers have their own sessions
        proc.kill()
    process.wait()


def kill_after_checkpoint(process, output_dir, step: int) -> None:
    """SIGKILL the job as soon as checkpoint-`step` is committed; the specs leave several steps after
    it so that a loaded machine still kills mid-run."""
    committed = output_dir / "checkpoints" / f"checkpoint-{step}" / "QCOMPILE_COMPLETE"
    deadline = time.time() + 300
    while not committed.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    kill_tree(process)
    assert committed.exists() and not (output_dir / "adapter_model.safetensors").exists(), "killed too late"


def test_zero2_kill_9_then_resume_matches_uninterrupted_run(tmp_path, model_dir):
    overrides = {"hardware": {"devices_per_node": 1}, "lora": {"dropout": 0.1},
                 "training": {"max_steps": 9, "save_steps": 3}}
    full, _ = run_example(tmp_path, "zero2-cpu.yaml", "full", **overrides)

    overrides["training"] = {**overrides["training"], "output_dir": str(tmp_path / "killed" / "out")}
    process = start(compile_job(tmp_path / "killed", "zero2-cpu.yaml", **overrides))
    kill_after_checkpoint(process, tmp_path / "killed" / "out", 3)

    resumed, lines = run_example(tmp_path, "zero2-cpu.yaml", "killed", resume=True, **overrides)
    assert any("resuming from" in line for line in lines)
    a, b = adapter(full), adapter(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_offload_with_disk_trains_every_adapter(tmp_path, model_dir):
    output_dir, lines = run_example(tmp_path, "offload-cpu.yaml")
    placement = next(line for line in lines if line.startswith("placement:"))
    assert '"disk"' in placement and '"cpu"' in placement  # part of the base model lives on disk
    # (transformers reads disk-placed weights straight from the model's safetensors, so the
    # offload folder may stay empty)
    assert_loss_falls(output_dir)
    # every LoRA tensor moved between the step-4 checkpoint and the end (and got a gradient at step 1,
    # which train.py checks itself)
    from safetensors.torch import load_file

    middle = load_file(str(output_dir / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors"))
    final = adapter(output_dir)
    assert len(final) == 2 * 2 * 4  # q_proj and v_proj, A and B, 4 layers
    assert not [key for key in final if torch.equal(final[key], middle[key])]
    assert_adapter_loads_and_changes_outputs(output_dir, model_dir)


def test_naive_model_parallel_trains_through_the_planned_split(tmp_path, model_dir):
    # the example's budget fits only with layers 1-3 and the head streamed from disk (the planner's map)
    output_dir, lines = run_example(tmp_path, "naive-mp-cpu.yaml")
    placement = next(line for line in lines if line.startswith("placement:"))
    assert '"disk"' in placement and '"cpu"' in placement
    assert_loss_falls(output_dir)
    assert_adapter_loads_and_changes_outputs(output_dir, model_dir)
    assert {int(key.split(".layers.")[1].split(".")[0]) for key in adapter(output_dir)} == {1, 2, 3}


def test_script_refuses_a_world_size_the_spec_did_not_ask_for(tmp_path, model_dir, monkeypatch):
    job = compile_job(tmp_path, "naive-mp-cpu.yaml", training={"output_dir": str(tmp_path / "out")})
    monkeypatch.setitem(os.environ, "WORLD_SIZE", "2")  # as if started by a launcher with two processes
    lines = []
    result = launch(job, echo=lines.append)
    assert result.returncode == 1
    assert "error: launched with 2 processes but the spec asks for 1; use the launch command qcompile emitted" in lines
