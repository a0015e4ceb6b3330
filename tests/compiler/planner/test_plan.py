import json

import pytest

from qcompile.backends import get_backend
from qcompile.backends.layer_placement import planned_device_map as layer_map
from qcompile.compiler.checks import budget_diagnostics, diagnose
from qcompile.compiler.choose import choose_backend, suggest_fixes
from qcompile.compiler.planner import resolve_architecture
from qcompile.compiler.planner.checks import architecture_diagnostics
from qcompile.compiler.planner.plan import memory_context, plan

from .conftest import EXAMPLE, context, spec_from


def planned_device_map(spec, arch):
    return layer_map(memory_context(spec, arch))

GiB = 2**30


@pytest.fixture
def arch(qwen72b):
    return resolve_architecture(qwen72b, EXAMPLE.parent)


def test_zero2_cannot_hold_the_bf16_weights_per_gpu(qwen72b, arch):
    result = plan(qwen72b, arch, get_backend("deepspeed-zero2"))
    assert not result.fits
    assert len(result.devices) == 8
    assert result.devices[0].breakdown["weights"] == 72_287_920_128 * 2
    assert any("134.6 GiB" in r and "ZeRO-2" in r for r in result.reasons)
    # the measured figure: about 141 GiB of tensors per GPU
    assert 139 * GiB < result.devices[0].tensor_bytes < 143 * GiB


def test_float32_load_copies_per_rank_and_overflows_host(arch):
    spec = spec_from(**{"model.dtype": "float32", "backend": "deepspeed-zero2"})
    result = plan(spec, arch, get_backend("deepspeed-zero2"))
    assert result.host.load_peak > result.host.budget
    assert any("host RAM at load" in r and "8 x" in r for r in result.reasons)
    # same checkpoint, bf16 and memory-mapped: one shared copy, well within the node
    shared = plan(spec_from(), arch, get_backend("deepspeed-zero2")).host
    assert shared.load_peak < 170 * GiB


def test_copying_load_without_low_cpu_mem_usage_also_overflows(arch):
    spec = spec_from(**{"strategies.low_cpu_mem_usage": False})
    assert any("low_cpu_mem_usage" in r for r in plan(spec, arch, get_backend("deepspeed-zero2")).reasons)


def test_naive_model_parallel_fits_with_the_last_gpu_busiest(qwen72b, arch):
    result = plan(qwen72b, arch, get_backend("naive-model-parallel"))
    assert result.fits
    last = result.devices[-1]
    assert last is result.peak_device
    assert 21 * GiB < last.tensor_bytes < 24 * GiB  # the issue: about 22.5 GiB on the last GPU
    assert last.breakdown["logits"] == 12 * 2048 * 152064


def test_zero3_shards_the_weights(qwen72b, arch):
    result = plan(qwen72b, arch, get_backend("deepspeed-zero3"))
    assert result.fits
    assert 22 * GiB < result.devices[0].tensor_bytes < 30 * GiB


def test_auto_picks_a_backend_that_fits_and_explains_rejections(qwen72b, arch):
    chosen, considered = choose_backend(context(qwen72b))
    assert chosen is not None and next(c for c in considered if c.backend is chosen).usable
    rejected = [c for c in considered if c.backend.kind == "deepspeed-zero2"]
    assert rejected and rejected[0].plan.reasons and not rejected[0].usable


def test_small_model_auto_picks_zero2(arch):
    spec = spec_from(**{"model.name": "Qwen/Qwen1.5-7B-Chat"})
    assert choose_backend(context(spec))[0].kind == "deepspeed-zero2"


def test_shorter_sequences_lower_the_peak(arch):
    long = plan(spec_from(), arch, get_backend("naive-model-parallel")).peak_device.peak
    naive = get_backend("naive-model-parallel")
    short = plan(spec_from(**{"strategies.max_seq_length": 512}), arch, naive).peak_device.peak
    no_ckpt = plan(spec_from(**{"strategies.gradient_checkpointing": False}), arch, get_backend("naive-model-parallel"))
    assert short < long < no_ckpt.peak_device.peak


def test_suggest_fixes_only_lists_changes_that_fit(qwen72b, arch):
    fixes = suggest_fixes(context(qwen72b), get_backend("deepspeed-zero2"))
    assert fixes and all(f.fits for f in fixes)
    assert any(f.backend == "naive-model-parallel" for f in fixes)
    assert all(f.peak_device_bytes <= 80 * GiB for f in fixes)


def test_json_has_the_contract_keys(qwen72b, arch):
    doc = plan(qwen72b, arch, get_backend("deepspeed-zero2")).to_json()
    assert {"backend", "fits", "devices", "host", "reasons"} <= set(doc)
    assert {"peak_bytes", "budget_bytes", "breakdown"} <= set(doc["devices"][0])
    assert {"load_peak_bytes", "train_peak_bytes", "budget_bytes"} <= set(doc["host"])
    assert doc["devices"][0]["peak_bytes"] == sum(doc["devices"][0]["breakdown"].values())
    json.dumps(doc)


def test_markdown_and_text_tables(qwen72b, arch):
    result = plan(qwen72b, arch, get_backend("naive-model-parallel"))
    md = result.to_markdown()
    assert md.startswith("# Memory plan: naive-model-parallel") and "| gpu 7 |" in md
    text = result.to_text()
    assert "headroom" in text and "host RAM per node" in text


def test_budget_diagnostics_for_zero2(arch):
    spec = spec_from(backend="deepspeed-zero2")
    zero2 = get_backend("deepspeed-zero2")
    diags = budget_diagnostics(context(spec).for_backend(zero2))
    assert len(diags) == 1 and diags[0].path == ("hardware",) and diags[0].is_error
    assert "peak 148.9 GiB on rank 0 (budget 80.0 GiB)" in diags[0].message
    assert "ZeRO-2 replicates the frozen weights" in diags[0].notes[0]
    assert "backend: deepspeed-zero3" in diags[0].hint and "backend: naive-model-parallel" in diags[0].hint
    naive = get_backend("naive-model-parallel")
    assert budget_diagnostics(context(spec_from(backend="naive-model-parallel")).for_backend(naive)) == []


def test_budget_diagnostics_auto_when_nothing_fits():
    spec = spec_from(**{"hardware.device_memory": "4GiB", "hardware.devices_per_node": 1})
    diags = [d for d in diagnose(context(spec))[0] if d.is_error]
    assert [(d.path, d.code) for d in diags] == [(("backend",), "memory_budget")]
    assert len(diags[0].notes) == 4  # one rejection per backend


def test_unknown_architecture_warns_that_memory_is_not_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    spec = spec_from(**{"model.name": "acme/mystery", "backend": "deepspeed-zero2"})
    diags, narrowed = diagnose(context(spec, tmp_path))
    assert narrowed.plan is None and not any(d.code == "memory_budget" for d in diags)
    [skipped] = [d for d in diags if d.code == "memory_not_checked"]
    assert not skipped.is_error and "acme/mystery" in skipped.message and "model.config" in skipped.hint
    assert not any(d.code == "memory_not_checked" for d in diagnose(context(spec, tmp_path), memory_check=False)[0])


def test_architecture_diagnostics_layers_and_modules(arch):
    spec = spec_from(**{"lora.layers": [0, 79, 80, 1000], "lora.target_modules": ["q_proj", "qkv_proj", "c_attn"]})
    diags = architecture_diagnostics(spec, arch)
    paths = sorted(d.path for d in diags)
    assert ("lora", "layers", 2) in paths and ("lora", "layers", 3) in paths
    assert ("lora", "layers", 1) not in paths
    assert ("lora", "target_modules", 1) in paths and ("lora", "target_modules", 2) in paths
    assert "80 layers" in next(d for d in diags if d.path == ("lora", "layers", 2)).message


def test_planned_device_map_matches_the_plan(arch, qwen72b):
    device_map = planned_device_map(qwen72b, arch)
    assert device_map["model.embed_tokens"] == 0 and device_map["lm_head"] == 7
    assert sum(1 for k, v in device_map.items() if k.startswith("model.layers.") and v == 7) == 10


def test_naive_mp_spills_to_cpu_when_the_gpus_are_too_small(arch):
    """4 x 32 GiB cannot hold 134.6 GiB: the map the plan is computed for keeps what fits on the GPUs,
    in order, and offloads the last layers and the head to CPU; each GPU's weights in the plan are
    the modules the map puts there (plus the streamed layer on GPU 0, which runs the offloaded ones)."""
    spec = spec_from(**{"hardware.devices_per_node": 4, "hardware.device_memory": "32GiB",
                        "strategies.offload.params": "cpu", "backend": "naive-model-parallel"})
    result, device_map = plan(spec, arch, get_backend("naive-model-parallel")), planned_device_map(spec, arch)
    assert result.fits, result.reasons
    layers = [device_map[f"model.layers.{i}"] for i in range(80)]
    resident = [d for d in layers if d != "cpu"]
    assert resident == sorted(resident) and set(resident) == {0, 1, 2, 3}
    assert layers[len(resident):] == ["cpu"] * (80 - len(resident))  # the tail, in order
    assert device_map["lm_head"] == device_map["model.norm"] == "cpu"
    layer, embedding, head = arch.layer_params() * 2, arch.embedding_params() * 2, arch.head_params() * 2
    for d, device in enumerate(result.devices):
        expected = resident.count(d) * layer + (embedding + max(layer, head) if d == 0 else 0)
        assert device.breakdown["weights"] == expected and device.peak <= device.budget
    assert result.host.train_peak > (80 - len(resident)) * layer  # the offloaded layers live in host RAM
    no_offload = spec_from(**{"hardware.devices_per_node": 4, "hardware.device_memory": "32GiB"})
    assert "cpu" not in planned_device_map(no_offload, arch).values()
    assert not plan(no_offload, arch, get_backend("naive-model-parallel")).fits


def test_offload_plan_moves_layers_off_a_small_gpu(arch):
    spec = spec_from(**{"hardware.devices_per_node": 1, "hardware.device_memory": "40GiB",
                        "strategies.offload.params": "cpu", "backend": "accelerate-offload"})
    result = plan(spec, arch, get_backend("accelerate-offload"))
    assert result.fits, result.reasons
    assert result.devices[0].peak <= 40 * GiB
    assert result.host.train_peak > 90 * GiB  # the offloaded weights live in host RAM
    no_offload = spec_from(**{"hardware.devices_per_node": 1, "hardware.device_memory": "40GiB"})
    assert not plan(no_offload, arch, get_backend("accelerate-offload")).fits


def test_accelerate_offload_spills_what_does_not_fit_unless_told_not_to(arch):
    spec = spec_from(**{"backend": "accelerate-offload", "hardware.devices_per_node": 1})
    del_params = spec.strategies.offload.model_copy(update={"params": None})
    spec = spec.model_copy(update={"strategies": spec.strategies.model_copy(update={"offload": del_params})})
    result = plan(spec, arch, get_backend("accelerate-offload"))
    assert result.fits and any("offloaded to cpu" in note for note in result.notes)
    pinned = spec.model_copy(update={"strategies": spec.strategies.model_copy(
        update={"offload": del_params.model_copy(update={"params": "none"})})})
    assert not plan(pinned, arch, get_backend("accelerate-offload")).fits


@pytest.mark.parametrize("kind", ["deepspeed-zero2", "deepspeed-zero3"])
def test_zero_plans_fp32_weights_as_the_bf16_engine_casts_them(arch, kind):
    """Issue 11, cause 3: DeepSpeed's bf16 engine casts the parameters before moving them to the device."""
    def weights(dtype, precision):
        spec = spec_from(**{"model.dtype": dtype, "strategies.mixed_precision": precision, "backend": kind})
        return plan(spec, arch, get_backend(kind)).devices[0].breakdown["weights"]

    assert weights("float32", "bf16") == weights("bfloat16", "bf16")
    assert weights("float32", "no") == 2 * weights("bfloat16", "no")


def test_autocast_is_planned_for_single_process_backends_only(arch):
    """Autocast over fp32 weights keeps bf16 copies of the frozen weights for backward (cause 2), lm_head's
    on the device that runs the loss; the ZeRO engines cast the module instead and copy nothing."""
    def activations(kind, dtype, precision):
        spec = spec_from(**{"model.dtype": dtype, "strategies.mixed_precision": precision, "backend": kind})
        return plan(spec, arch, get_backend(kind)).devices[-1].breakdown["activations"]

    head_copy = 2 * arch.vocab_size * arch.hidden_size
    naive = "naive-model-parallel"
    assert activations(naive, "float32", "bf16") - activations(naive, "bfloat16", "bf16") >= head_copy
    assert activations("deepspeed-zero2", "float32", "bf16") == activations("deepspeed-zero2", "bfloat16", "bf16")
