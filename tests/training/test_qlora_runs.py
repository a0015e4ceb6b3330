"""Real QLoRA and lean-adapter training of the tiny model on CPU, compiled and launched as `qcompile run`
does: a 4-bit NF4 base with 8-bit AdamW (its state inspected, its losses next to fp32 AdamW's), an 8-bit
base, AdaLoRA pruning toward target_r with a kill -9 and resume, rsLoRA with bf16 adapters,
and ZeRO-2 on a 4-bit base. A few steps each."""

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")
pytest.importorskip("deepspeed")

from .jobs import adapter, compile_job, launch, metrics, start  # noqa: E402
from .test_train_runs import assert_adapter_loads_and_changes_outputs, kill_after_checkpoint  # noqa: E402

pytestmark = pytest.mark.slow

EXAMPLE = "naive-mp-cpu.yaml"
RESIDENT = {"offload": {"optimizer": "none", "params": "none"}}  # quantised layers are never offloaded
SHORT = {"gradient_accumulation_steps": 1, "micro_batch_size": 2, "max_steps": 6, "save_steps": 3}
Q4 = {"quantization": {"bits": 4, "type": "nf4", "double_quant": True, "compute_dtype": "float32"}}


def run(tmp_path, name, example=EXAMPLE, resume=False, **sections):
    overrides = {"strategies": RESIDENT, "hardware": {"device_memory": "1GiB"}, **sections}
    overrides["training"] = {**SHORT, **sections.get("training", {}), "output_dir": str(tmp_path / name / "out")}
    job = compile_job(tmp_path / name, example, **overrides)
    lines = []
    result = launch(job, resume=resume, echo=lines.append)
    assert result.returncode == 0, "\n".join(lines[-40:])
    return job, tmp_path / name / "out"


def losses(output_dir):
    return [m["loss"] for m in metrics(output_dir)]


def assert_loss_falls(output_dir):
    seen = losses(output_dir)
    assert len(seen) >= 4 and sum(seen[-2:]) < sum(seen[:2]), seen


@pytest.fixture(scope="module")
def nf4_runs(tmp_path_factory):
    """The same 4-bit job with 8-bit AdamW and with fp32 AdamW (r 64: most tensors reach min_8bit_size)."""
    tmp = tmp_path_factory.mktemp("nf4")
    lora = {"r": 64, "alpha": 64, "layers": None, "target_modules": "all-linear"}
    steps = {"max_steps": 4, "save_steps": 4}
    eight = run(tmp, "adamw_8bit", model=Q4, lora=lora, training={"optimizer": "adamw_8bit", **steps})
    full = run(tmp, "adamw", model=Q4, lora=lora, training={"optimizer": "adamw", **steps})
    return eight, full


def test_4bit_nf4_base_trains_and_its_adapter_serves_on_the_full_precision_base(nf4_runs, model_dir):
    (job, out), _ = nf4_runs
    assert "quantized_load" in job.build.files["train.py"].decode()
    assert_loss_falls(out)
    assert_adapter_loads_and_changes_outputs(out, model_dir)
    config = json.loads((out / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"}  # all-linear, resolved at compile time


def test_adamw_8bit_keeps_8bit_states_and_converges_like_adamw(nf4_runs):
    (_, out), (_, out_full) = nf4_runs
    state = torch.load(out / "checkpoints" / "checkpoint-4" / "optimizer.pt", map_location="cpu", weights_only=False)
    # bitsandbytes keeps its 8-bit entries (state1/2, absmax, qmaps) under one key of each tensor's state
    entries = [s.get("__bnb_optimizer_quant_state__", s) for s in state["state"].values()]
    kinds = {(s["state1"].dtype, s["state1"].numel() >= 4096) for s in entries}
    assert (torch.uint8, True) in kinds and (torch.float32, False) in kinds and len(kinds) == 2
    eight, full = losses(out), losses(out_full)
    assert abs(eight[-1] - full[-1]) < 0.1 * full[-1], (eight, full)


def test_8bit_base_trains_and_its_adapter_serves(tmp_path, model_dir):
    _, out = run(tmp_path, "int8", model={"quantization": {"bits": 8}}, lora={"layers": None})
    assert_loss_falls(out)
    assert_adapter_loads_and_changes_outputs(out, model_dir)


def test_rslora_with_bfloat16_adapters(tmp_path, model_dir):
    _, out = run(tmp_path, "rslora", lora={"method": "rslora", "dtype": "bfloat16", "layers": None})
    assert_loss_falls(out)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["use_rslora"] is True
    assert_adapter_loads_and_changes_outputs(out, model_dir)


def test_adalora_prunes_toward_target_r_and_resumes_after_kill(tmp_path, model_dir):
    sections = {"model": Q4, "lora": {"method": "adalora", "r": 8, "target_r": 2, "layers": None},
                "training": {"max_steps": 10, "save_steps": 4, "optimizer": "paged_adamw_8bit"}}
    overrides = {"strategies": RESIDENT, "hardware": {"device_memory": "1GiB"}, **sections}
    out = tmp_path / "adalora" / "out"
    overrides["training"] = {**SHORT, **sections["training"], "output_dir": str(out)}
    job = compile_job(tmp_path / "adalora", EXAMPLE, **overrides)
    kill_after_checkpoint(start(job), out, 4)
    assert (out / "checkpoints" / "checkpoint-4" / "adalora_state.pt").exists()
    lines = []
    result = launch(job, resume=True, echo=lines.append)
    assert result.returncode == 0, "\n".join(lines[-40:])
    assert any("resuming from" in line for line in lines)
    config = json.loads((out / "adapter_config.json").read_text())
    ranks = [sum(mask) if isinstance(mask, list) else mask for mask in config["rank_pattern"].values()]
    modules = 4 * 4  # q/k/v/o in 4 layers
    assert len(ranks) == modules and sum(ranks) <= 2 * modules < 8 * modules, ranks
    assert_adapter_loads_and_changes_outputs(out, model_dir)


def test_zero2_on_a_4bit_base_with_dora(tmp_path, model_dir):
    _, out = run(tmp_path, "zero2", example="zero2-cpu.yaml", model=Q4,
                 lora={"method": "dora", "r": 64, "alpha": 64}, training={"optimizer": "adamw_8bit"})
    assert_loss_falls(out)
    assert json.loads((out / "adapter_config.json").read_text())["use_dora"] is True
    assert any("lora_magnitude_vector" in key for key in adapter(out))
    assert_adapter_loads_and_changes_outputs(out, model_dir)


def test_zero3_with_dora_magnitudes_are_the_whole_weights_norms(tmp_path, model_dir):
    """peft gathers each partitioned weight for DoRA's norm: the magnitudes start at the rows' norms (and
    move by about 2 % in 6 steps; an ungathered, empty weight would give zeros)."""
    from transformers import AutoModelForCausalLM

    _, out = run(tmp_path, "zero3_dora", example="zero3-cpu.yaml", lora={"method": "dora"})
    assert_loss_falls(out)
    weights = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()
    magnitudes = {k: v for k, v in adapter(out).items() if "lora_magnitude_vector" in k}
    assert len(magnitudes) == 16
    for key, magnitude in magnitudes.items():
        module = key.split("base_model.model.")[1].split(".lora_magnitude_vector")[0]
        torch.testing.assert_close(magnitude, weights[f"{module}.weight"].norm(dim=1), rtol=0.05, atol=0)


def test_zero2_on_an_8bit_base_with_an_offloaded_8bit_optimizer(tmp_path, model_dir):
    """An 8-bit base trains under ZeRO-2; ds_config keeps zero_force_ds_cpu_optimizer off, so the Trainer's
    bitsandbytes AdamW8bit steps the offloaded fp32 partition on the CPU: each rank's saved states are uint8.
    (One run for both: each is a 2-rank DeepSpeed launch.)"""
    _, out = run(tmp_path, "zero2_int8_offload_8bit", example="zero2-cpu.yaml", model={"quantization": {"bits": 8}},
                 lora={"r": 64, "alpha": 64}, strategies={"offload": {"optimizer": "cpu", "params": "none"}},
                 training={"optimizer": "adamw_8bit"})
    assert_loss_falls(out)
    assert_adapter_loads_and_changes_outputs(out, model_dir)
    files = sorted((out / "checkpoints").glob("checkpoint-6/global_step6/*optim_states.pt"))
    assert len(files) == 2  # one partition per rank
    for file in files:
        saved = torch.load(file, map_location="cpu", weights_only=False)["optimizer_state_dict"]
        state = saved["base_optimizer_state"]["state"]  # ZeRO's wrapper around the Trainer's optimizer
        entries = [s.get("__bnb_optimizer_quant_state__", s) for s in state.values()]
        assert entries and all(s["state1"].dtype == torch.uint8 for s in entries), entries
