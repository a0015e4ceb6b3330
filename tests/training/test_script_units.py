"""The generated train.py's parts (templates/script/*.py), imported as modules and run in-process on the
tiny model (no launcher, seconds)."""

import json
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("accelerate")

from qcompile.compiler.emit import compile_spec  # noqa: E402
from qcompile.compiler.load import load_spec  # noqa: E402
from qcompile.templates.script import core, deepspeed, placement, staggered_load, zero3_load  # noqa: E402

from .jobs import write_spec  # noqa: E402

pytestmark = pytest.mark.usefixtures("model_dir")  # the example specs compile against the tiny model


@pytest.fixture
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def job_config(tmp_path, example="naive-mp-cpu.yaml", **overrides) -> dict:
    """train_config.json as `qcompile run` compiles it for the example with these overrides."""
    overrides.setdefault("training", {})["output_dir"] = str(tmp_path / "out")
    build = compile_spec(load_spec(write_spec(tmp_path / "spec", example, **overrides)))
    return json.loads(build.files["train_config.json"])


def load_placed(config):
    """What a placement job (parts core, staggered_load, placement) loads: the base model spread by the
    device_map, then the LoRA adapters made real."""
    kwargs = placement.place_layers(config, core.load_kwargs(config))
    return placement.add_placed_lora(staggered_load.load_in_turns(config, kwargs), config)


def test_gradient_checkpointing_recomputes_with_frozen_base(tmp_path):
    config = job_config(tmp_path, lora={"layers": None}, hardware={"device_memory": "1GiB"})
    model = load_placed(config)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    calls, mlp = [], model.base_model.model.model.layers[1].mlp
    original = mlp.forward
    mlp.forward = lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)
    ids = torch.randint(0, 500, (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()
    assert len(calls) == 2  # once forward, once recomputed in backward
    lora = [p for n, p in model.named_parameters() if p.requires_grad]
    assert lora and all(p.grad is not None for p in lora)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)


def test_selective_layers_get_adapters_only_there(tmp_path):
    config = job_config(tmp_path, lora={"layers": [1, 3]}, hardware={"device_memory": "1GiB"})
    model = load_placed(config)
    layers = {int(n.split(".layers.")[1].split(".")[0]) for n, p in model.named_parameters() if p.requires_grad}
    assert layers == {1, 3}


def test_offload_trap_peft_on_disk_offloaded_model_leaves_meta_adapters(tmp_path, model_dir):
    """The trap itself: plain get_peft_model after accelerate put layers on disk."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = job_config(tmp_path)
    kwargs = {"dtype": torch.float32, "revision": None, "trust_remote_code": False, "attn_implementation": "sdpa"}
    device_map = placement.placement_map(config, kwargs)
    assert "disk" in device_map.values()
    base = AutoModelForCausalLM.from_pretrained(model_dir, device_map=device_map,
                                                offload_folder=str(tmp_path / "off"), **kwargs)
    naive = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"]))
    assert any(p.device.type == "meta" for n, p in naive.named_parameters() if "lora_" in n)


def test_offload_fix_every_adapter_is_real_and_gets_a_gradient(tmp_path):
    config = job_config(tmp_path)
    model = load_placed(config)
    # the planner's map for the example: layers 1-3 (all with adapters) and the head on disk
    on_disk = sorted(name for name, device in config["backend"]["device_map"].items() if device == "disk")
    assert on_disk == ["lm_head", "model.layers.1", "model.layers.2", "model.layers.3", "model.norm"]
    assert "disk" in set(model.hf_device_map.values())
    assert any(name.startswith("model.layers.3") and device == "disk" for name, device in model.hf_device_map.items())
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert lora and all(p.device.type == "cpu" for p in lora.values())
    before = {n: p.detach().clone() for n, p in lora.items()}
    optimizer = torch.optim.AdamW(lora.values(), lr=1e-2)
    model.train()
    ids = torch.randint(0, 500, (2, 12))
    for _ in range(2):  # B starts at zero: A only moves from the second step on
        model(input_ids=ids, labels=ids).loss.backward()
        assert all(p.grad is not None for p in lora.values())
        optimizer.step()
        optimizer.zero_grad()
    unchanged = [n for n, p in lora.items() if torch.equal(p.detach(), before[n])]
    assert not unchanged
    # and the offloaded base weights are still the ones on disk, untouched
    on_disk = [p for n, p in model.named_parameters() if "layers.3.self_attn.q_proj.base_layer" in n]
    assert on_disk and all(p.device.type == "meta" for p in on_disk)


def test_gpu_blocks_of_a_split_stay_whole(tmp_path):
    """Only offloaded (cpu/disk) blocks are split to leaves; a layer on GPU 1 keeps its activation
    function with it instead of bouncing to the execution device."""
    config = job_config(tmp_path)
    gpu_map = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.layers.0": 0, "model.layers.1": 0,
               "model.layers.2": 1, "model.layers.3": 1, "model.norm": 1, "lm_head": "disk"}
    config["backend"].update(device_map=gpu_map, execution_device=0)
    kwargs = {"dtype": torch.float32, "revision": None, "trust_remote_code": False, "attn_implementation": "sdpa"}
    placed = placement.placement_map(config, kwargs)
    assert {k: v for k, v in placed.items() if k != "lm_head"} == {k: v for k, v in gpu_map.items() if k != "lm_head"}
    assert placed["lm_head"] == "disk"


@pytest.mark.parametrize("strategy, devices", [("sequential", {0}), ("balanced", {0, 1})])
def test_offload_device_map_strategy_reaches_accelerate(tmp_path, strategy, devices):
    config = job_config(tmp_path)
    config["backend"].update(device_map=None, execution_device=0, device_map_strategy=strategy,
                             max_memory={"0": 10**7, "1": 10**7, "cpu": 10**9})
    kwargs = {"dtype": torch.float32, "revision": None, "trust_remote_code": False, "attn_implementation": "sdpa"}
    assert set(placement.placement_map(config, kwargs).values()) == devices


def test_resume_discards_only_interrupted_newer_checkpoints(tmp_path):
    folder = tmp_path / "checkpoints"
    for step, committed in ((4, True), (6, False), (8, True), (12, False)):
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        if committed:
            (folder / f"checkpoint-{step}" / core.COMMITTED).write_text("")
    (folder / "checkpoint-2").mkdir()  # older and uncommitted: not this resume's business
    resumed = core.latest_checkpoint(tmp_path)
    assert resumed.name == "checkpoint-8"
    core.discard_interrupted_checkpoints(tmp_path, resumed)
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-2", "checkpoint-4", "checkpoint-6", "checkpoint-8"]


def test_deepspeed_part_points_trainer_at_the_ds_config_and_refuses_to_train_without_it(tmp_path):
    config = job_config(tmp_path, "zero3-cpu.yaml")
    arguments = deepspeed.deepspeed_arguments(config, tmp_path)
    assert arguments == {"deepspeed": str(tmp_path / "ds_config.json"), "ddp_backend": "gloo", "ddp_timeout": 600}
    (tmp_path / "ds_config.json").write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    plain = SimpleNamespace(is_deepspeed_enabled=False, args=SimpleNamespace(deepspeed=arguments["deepspeed"]))
    with pytest.raises(core.JobError, match="refusing to train without ZeRO-3"):
        deepspeed.require_deepspeed(plain)
    deepspeed.require_deepspeed(SimpleNamespace(is_deepspeed_enabled=True))


def test_zero3_part_refuses_a_model_loaded_whole(tmp_path):
    whole = torch.nn.Linear(4, 4)  # no ds_numel: zero.Init did not partition it
    with pytest.raises(core.JobError, match="not partitioned at load"):
        zero3_load.report_partition(whole)


def test_staggered_load_gives_each_rank_the_whole_model_unplaced(tmp_path):
    config = job_config(tmp_path, "zero2-cpu.yaml")
    assert core.Steps().place_model(config, {"a": 1}) == {"a": 1}  # no part placed it: kwargs unchanged
    model = staggered_load.load_in_turns(config, core.load_kwargs(config))
    assert {p.device.type for p in model.parameters()} == {"cpu"} and not hasattr(model, "hf_device_map")


def test_placed_model_takes_a_checkpoints_adapter_in_place_and_refuses_foreign_weights(tmp_path):
    """Resume of a disk-offloaded model: peft's load_adapter would re-dispatch it (and fail on its meta
    weights); the placement part copies the saved adapter into the placed LoRA tensors instead."""
    config = job_config(tmp_path)  # the example: layers 1-3 and the head on disk
    saved = load_placed(config)
    with torch.no_grad():
        for p in saved.parameters():
            if p.requires_grad:
                p.normal_()  # lora_B starts at zero: make every tensor distinguishable
    saved.save_pretrained(tmp_path / "checkpoint-2")
    model = load_placed(config)
    before = {n: p.clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer = SimpleNamespace(model=model)
    placement.resume_in_place(lambda t: None)(trainer)
    trainer._load_from_checkpoint(str(tmp_path / "checkpoint-2"))
    expected = dict(saved.named_parameters())
    for name in before:
        assert not torch.equal(before[name], expected[name])
        torch.testing.assert_close(dict(model.named_parameters())[name], expected[name], rtol=0, atol=0)
    assert "disk" in set(model.hf_device_map.values())  # still placed, nothing dispatched again

    other = job_config(tmp_path / "other", lora={"target_modules": ["q_proj", "v_proj", "gate_proj"]})
    with pytest.raises(core.JobError, match="holds adapter weights this model does not have"):
        placement.load_adapter_in_place(load_placed(other), str(tmp_path / "checkpoint-2"))
