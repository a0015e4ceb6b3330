"""The naive-model-parallel map is the planner's (layer_placement.planned_device_map), checked on real
transformers models built on the meta device for N fake GPUs with given budgets: every module placed
(accelerate's own check), forward order kept, no device over its budget per the plan, each device's
weights in the plan equal to the bytes of the modules the map puts there, cpu/disk only when allowed."""

from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
accelerate_utils = pytest.importorskip("accelerate.utils")

from qcompile.backends.layer_placement import planned_device_map as layer_map  # noqa: E402
from qcompile.backends.layer_placement import split_layers
from qcompile.backends.naive_mp import NAIVE_MODEL_PARALLEL as KIND  # noqa: E402
from qcompile.compiler.planner import resolve_architecture  # noqa: E402
from qcompile.compiler.planner.architecture import Architecture  # noqa: E402
from qcompile.compiler.planner.memory import CUDA_CONTEXT  # noqa: E402
from qcompile.compiler.planner.plan import memory_context, plan  # noqa: E402
from qcompile.schemas.spec import Spec  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def planned_device_map(spec: Spec, arch: Architecture) -> dict:
    return layer_map(memory_context(spec, arch))

CONFIG = {"model_type": "qwen2", "hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 12,
          "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 5000, "tie_word_embeddings": False}
ARCH = Architecture.from_config(CONFIG, "test")
MiB = 2**20


def meta_model(arch: Architecture):
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(**arch.as_config()), dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def small_model():
    return meta_model(ARCH)


def gpu_spec(devices: int, budget: int, params: str) -> Spec:
    data = yaml.safe_load((EXAMPLES / "naive-mp-cpu.yaml").read_text())
    data["model"]["dtype"] = "bfloat16"
    data["hardware"].update(accelerator="cuda", devices_per_node=devices, device_memory=budget)
    data["strategies"]["offload"]["params"] = params
    return Spec.model_validate(data)


def forward_names(arch: Architecture) -> list[str]:
    return ["model.embed_tokens", *(f"model.layers.{i}" for i in range(arch.num_layers)), "model.norm", "lm_head"]


def check_map_against_plan(model, spec: Spec, arch: Architecture) -> dict:
    """The checks every planned map must pass; returns the map."""
    device_map, result = planned_device_map(spec, arch), plan(spec, arch, KIND)
    accelerate_utils.check_device_map(model, device_map)  # every parameter placed
    rank = {"cpu": 10**6, "disk": 10**6 + 1}
    order = [rank.get(device_map[name], device_map[name]) for name in forward_names(arch)]
    assert order[:-1] == sorted(order[:-1]) and device_map["model.embed_tokens"] == 0  # activations flow one way
    assert device_map["lm_head"] == device_map["model.norm"]
    size = {name: sum(p.numel() * p.element_size() for p in model.get_submodule(name).parameters())
            for name in device_map}
    offloaded = any(d in ("cpu", "disk") for d in device_map.values())
    streamed = max(size["model.layers.0"], size["model.norm"] + size["lm_head"]) if offloaded else 0
    for d, device in enumerate(result.devices):
        if result.fits:
            assert device.peak <= device.budget
        on_device = sum(size[name] for name, where in device_map.items() if where == d)
        assert device.breakdown["weights"] == on_device + (streamed if d == 0 else 0), device.name
    return device_map


def even_peaks(devices: int) -> list[int]:
    return [d.peak for d in plan(gpu_spec(devices, 2**40, "none"), ARCH, KIND).devices]


@pytest.mark.parametrize("devices", [2, 3, 5])
def test_even_split_when_every_device_fits(small_model, devices):
    spec = gpu_spec(devices, max(even_peaks(devices)), "disk")  # exactly enough for the worst share
    device_map = check_map_against_plan(small_model, spec, ARCH)
    assert plan(spec, ARCH, KIND).fits
    for d, block in enumerate(split_layers(ARCH.num_layers, devices)):
        assert [i for i in range(ARCH.num_layers) if device_map[f"model.layers.{i}"] == d] == list(block)
    assert device_map["lm_head"] == devices - 1 and "disk" not in device_map.values()


@pytest.mark.parametrize("params", ["none", "cpu", "disk"])
def test_spill_to_cpu_or_disk_only_when_allowed(small_model, params):
    spec = gpu_spec(2, min(even_peaks(2)) - 1, params)  # the even split no longer fits
    device_map = check_map_against_plan(small_model, spec, ARCH)
    result = plan(spec, ARCH, KIND)
    spilled = {d for d in device_map.values() if isinstance(d, str)}
    if params == "none":
        assert not spilled and not result.fits  # nowhere to go: the plan says so
        assert "gpu 1 needs" in result.reasons[0]
    else:
        assert spilled == {params} and result.fits, result.reasons
        assert {device_map["lm_head"], device_map["model.layers.11"]} == {params}
        assert 1 in device_map.values()  # the second GPU still holds layers
        assert "runs layers" in result.devices[0].note and params in result.host.notes[-1]


def test_uneven_fill_when_that_fits_without_offload(small_model):
    """Between the even split and offload: fill the devices in order when that fits."""
    peaks = even_peaks(2)
    layer = ARCH.layer_params() * 2
    spec = gpu_spec(2, max(peaks) - layer // 2, "none")
    device_map = check_map_against_plan(small_model, spec, ARCH)
    assert plan(spec, ARCH, KIND).fits
    on_first = sum(1 for i in range(ARCH.num_layers) if device_map[f"model.layers.{i}"] == 0)
    assert on_first != len(split_layers(ARCH.num_layers, 2)[0])


def test_too_small_everywhere_does_not_fit(small_model):
    spec = gpu_spec(2, CUDA_CONTEXT + MiB, "disk")
    check_map_against_plan(small_model, spec, ARCH)
    assert not plan(spec, ARCH, KIND).fits


def test_qwen72b_on_8x80gib_is_the_even_split_the_plan_reports():
    spec = Spec.model_validate({**yaml.safe_load((EXAMPLES / "qwen72b-lora.yaml").read_text()), "backend": KIND.kind})
    arch = resolve_architecture(spec, EXAMPLES)
    device_map = check_map_against_plan(meta_model(arch), spec, arch)
    blocks = split_layers(80, 8)
    assert all(device_map[f"model.layers.{i}"] == d for d, block in enumerate(blocks) for i in block)
    assert device_map["model.embed_tokens"] == 0 and device_map["lm_head"] == device_map["model.norm"] == 7
    gpu0 = plan(spec, arch, KIND).devices[0].breakdown["weights"]
    assert gpu0 == (arch.embedding_params() + 10 * arch.layer_params()) * 2  # 18.6 GiB, not ~77 GiB

