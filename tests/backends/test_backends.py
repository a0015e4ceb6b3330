"""Backends as pure objects: registry, configs, launch argv, train_config.json. No torch needed."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from qcompile.backends.layer_placement import planned_device_map
from qcompile.backends.offload import placement_budgets
from qcompile.backends.registry import BUILTINS, get_backend
from qcompile.backends.train_config import build_train_config
from qcompile.compiler.rules import backend_rules
from qcompile.schemas.spec import Spec
from tests.helpers import narrowed

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def example(name: str, **overrides) -> Spec:
    data = yaml.safe_load((EXAMPLES / name).read_text())
    for section, values in overrides.items():
        data[section] = {**data[section], **values}
    return Spec.model_validate(data)


def test_registry_has_every_concrete_kind():
    assert set(BUILTINS) == {"deepspeed-zero2", "deepspeed-zero3", "accelerate-offload", "naive-model-parallel"}
    for kind in BUILTINS:
        assert get_backend(kind).kind == kind
    with pytest.raises(KeyError, match="known"):
        get_backend("auto")


def test_zero2_ds_config_is_concrete_and_consistent():
    spec = example("zero2-cpu.yaml", training={"micro_batch_size": 3, "gradient_accumulation_steps": 5})
    config = get_backend("deepspeed-zero2").ds_config(narrowed(spec, EXAMPLES))
    assert "auto" not in json.dumps(config)
    assert config["train_batch_size"] == 3 * 5 * 2
    assert config["zero_optimization"]["stage"] == 2
    assert config["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": False}
    assert config["zero_force_ds_cpu_optimizer"] is False
    no_offload = example("zero2-cpu.yaml", strategies={"offload": {"optimizer": "none", "params": "none"}})
    zero = get_backend("deepspeed-zero2").ds_config(narrowed(no_offload, EXAMPLES))["zero_optimization"]
    assert "offload_optimizer" not in zero


def test_zero2_on_cpu_launches_with_gloo_env_and_one_thread_per_rank():
    spec = example("zero2-cpu.yaml")
    backend = get_backend("deepspeed-zero2")
    assert backend.launch_argv(spec)[:2] == ["torchrun", "--nproc-per-node=2"]
    assert backend.launch_argv(spec)[-3:] == ["train.py", "--config", "train_config.json"]
    env = backend.launch_env(spec)
    assert env["DS_ACCELERATOR"] == "cpu" and env["OMP_NUM_THREADS"] == "1"
    assert "ACCELERATE_USE_CPU" not in env  # it would turn DeepSpeed off
    accel = backend.accelerate_config(spec)
    assert accel["deepspeed_config"]["deepspeed_config_file"] == "ds_config.json"
    assert "mixed_precision" not in accel and accel["num_processes"] == 2


def test_zero2_refuses_fp16_on_cpu():
    spec = example("zero2-cpu.yaml", strategies={"mixed_precision": "fp16"})
    assert [(d.code, d.severity) for d in backend_rules(spec, get_backend("deepspeed-zero2"))] == [
        ("fp16_on_cpu", "error")]
    offload = example("offload-cpu.yaml", strategies={"mixed_precision": "fp16"})
    assert [(d.code, d.severity) for d in backend_rules(offload, get_backend("accelerate-offload"))] == [
        ("fp16_on_cpu", "warning")]


def test_single_process_backends_run_one_process():
    for name, kind in (("offload-cpu.yaml", "accelerate-offload"), ("naive-mp-cpu.yaml", "naive-model-parallel")):
        spec, backend = example(name), get_backend(kind)
        assert backend.processes(spec) == backend.data_parallel_size(spec) == 1
        assert backend.ds_config(narrowed(spec, EXAMPLES)) is None
        config = backend.accelerate_config(spec)
        assert config["num_processes"] == 1 and config["distributed_type"] == "NO" and config["use_cpu"] is True
    assert get_backend("accelerate-offload").launch_argv(example("offload-cpu.yaml"))[:4] == [
        "accelerate", "launch", "--config_file", "accelerate_config.yaml"]


def test_train_config_resolves_paths_against_the_spec_folder(tmp_path):
    spec = example("offload-cpu.yaml")
    local = tmp_path / "models" / "tiny-qwen2"  # a local model directory beside the spec
    local.mkdir(parents=True)
    shutil.copy(REPO / "tests" / "specs" / "models" / "tiny-qwen2" / "config.json", local)
    config = build_train_config(narrowed(spec, tmp_path, "accelerate-offload"))
    assert set(config) == {"accelerator", "backend", "data", "lora", "model", "strategies", "training", "world_size"}
    assert config["data"]["path"] == str(tmp_path / "data" / "chat.jsonl")
    assert config["training"]["output_dir"] == str((tmp_path.parent / "runs" / "example-offload").resolve())
    run_dir = (tmp_path.parent / "runs" / "example-offload").resolve()
    assert config["backend"]["offload_folder"] == str(run_dir / "offload")
    assert config["model"]["path"] == str(tmp_path / "models" / "tiny-qwen2")
    # the weight budget is device_memory less the plan's activation reserve
    assert 0 < config["backend"]["max_memory"]["cpu"] < spec.hardware.device_memory
    assert config["world_size"] == 1
    hub = Spec.model_validate({**spec.model_dump(), "model": {"name": "Qwen/Qwen1.5-72B-Chat"}})
    assert build_train_config(narrowed(hub, tmp_path, "accelerate-offload"))["model"]["path"] == "Qwen/Qwen1.5-72B-Chat"


def test_zero2_world_size_counts_every_rank():
    spec = example("zero2-cpu.yaml")
    assert build_train_config(narrowed(spec, EXAMPLES, "deepspeed-zero2"))["world_size"] == 2


def test_naive_max_memory_adds_cpu_only_when_params_may_go_there():
    gpu = {"accelerator": "cuda", "devices_per_node": 2, "device_memory": "1GB"}
    none = example("naive-mp-cpu.yaml", hardware=gpu, strategies={"offload": {"optimizer": "none", "params": "none"}})
    assert set(placement_budgets(narrowed(none, EXAMPLES))) == {"0", "1"}
    disk = example("naive-mp-cpu.yaml", hardware=gpu)
    budgets = placement_budgets(narrowed(disk, EXAMPLES))
    assert set(budgets) == {"0", "1", "cpu"} and budgets["cpu"] == 8 * 2**30 and budgets["0"] <= 10**9


def test_naive_train_config_carries_the_planners_map_for_the_example():
    pytest.importorskip("transformers")  # to create the example model's config.json and weights
    from tests.training.jobs import tiny_model

    tiny_model(EXAMPLES)
    spec = example("naive-mp-cpu.yaml")
    ctx = narrowed(spec, EXAMPLES)
    config = build_train_config(ctx)["backend"]
    assert config["device_map"] == planned_device_map(ctx.memory_context) == {
        "model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
        "model.layers.1": "disk", "model.layers.2": "disk", "model.layers.3": "disk",
        "model.norm": "disk", "lm_head": "disk"}
    assert ctx.plan.fits  # the example fits because of the spill
    roomy = narrowed(example("naive-mp-cpu.yaml", hardware={"device_memory": "4MiB"}), EXAMPLES)
    assert set(planned_device_map(roomy.memory_context).values()) == {"cpu"}
    kept = narrowed(example("naive-mp-cpu.yaml", strategies={"offload": {"optimizer": "none", "params": "none"}}),
                    EXAMPLES)
    assert set(planned_device_map(kept.memory_context).values()) == {"cpu"}
    assert not kept.plan.fits  # no spill allowed: it says so


def test_naive_unknown_architecture_leaves_the_map_to_accelerate(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    spec = Spec.model_validate({**example("naive-mp-cpu.yaml").model_dump(), "model": {"name": "acme/mystery"}})
    ctx = narrowed(spec, tmp_path)
    config = ctx.backend.train_config(ctx)
    assert ctx.arch is None and ctx.plan is None and config["device_map"] is None
    assert config["max_memory"] == {"cpu": spec.hardware.device_memory}


def test_offload_passes_the_device_map_strategy(tmp_path):
    raw = {"version": 1, "model": {"name": "m", "device_map": "balanced"}, "backend": "accelerate-offload",
           "hardware": {"device_memory": "8GiB", "host_memory": "16GiB"}, "data": {"path": "d"},
           "training": {"output_dir": "o"}}
    ctx = narrowed(Spec.model_validate(raw), tmp_path)
    section = ctx.backend.train_config(ctx)
    assert section["device_map_strategy"] == "balanced"
