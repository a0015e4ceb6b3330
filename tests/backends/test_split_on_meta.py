"""The naive-model-parallel split, checked on a real transformers model built on the meta device
for N fake devices: every module placed, no device over budget, order preserved, accepted by
accelerate's own device_map check."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
accelerate_utils = pytest.importorskip("accelerate.utils")

from qcompile.backends.naive_mp import DoesNotFit, assign_modules, module_sizes  # noqa: E402
from qcompile.compiler.planner.architecture import Architecture  # noqa: E402

CONFIG = {"model_type": "qwen2", "hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 12,
          "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 5000, "tie_word_embeddings": False}


@pytest.fixture(scope="module")
def meta_model():
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**CONFIG)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)


def real_sizes(model) -> dict[str, int]:
    return {name: sum(p.numel() * p.element_size() for p in model.get_submodule(name).parameters())
            for name, _ in module_sizes(Architecture.from_config(CONFIG, "test"), "bfloat16")}


def test_planned_sizes_match_the_real_modules(meta_model):
    planned = dict(module_sizes(Architecture.from_config(CONFIG, "test"), "bfloat16"))
    assert planned == real_sizes(meta_model)


@pytest.mark.parametrize("devices", [2, 3, 5])
def test_split_over_fake_devices(meta_model, devices):
    sizes = module_sizes(Architecture.from_config(CONFIG, "test"), "bfloat16")
    total = sum(size for _, size in sizes)
    budget = total // devices + max(size for _, size in sizes)  # enough in all, tight on each
    device_map = assign_modules(sizes, [(i, budget) for i in range(devices)])

    accelerate_utils.check_device_map(meta_model, device_map)  # every parameter is placed
    order = [device_map[name] for name, _ in sizes]
    assert order == sorted(order) and order[0] == 0  # forward order, embedding first, head last
    assert len(set(order)) >= -(-total // budget)  # spread out: no device could take more
    actual = real_sizes(meta_model)
    for device in range(devices):
        assert sum(actual[n] for n, d in device_map.items() if d == device) <= budget


def test_split_too_small_raises(meta_model):
    sizes = module_sizes(Architecture.from_config(CONFIG, "test"), "bfloat16")
    with pytest.raises(DoesNotFit):
        assign_modules(sizes, [(i, sum(s for _, s in sizes) // 4) for i in range(2)])


def test_meta_model_dispatches_on_the_map(meta_model):
    """accelerate accepts the map as the placement of the model's modules (meta tensors stay meta)."""
    sizes = module_sizes(Architecture.from_config(CONFIG, "test"), "bfloat16")
    device_map = assign_modules(sizes, [("cpu", sum(s for _, s in sizes) // 2), ("disk", None)])
    assert set(device_map.values()) == {"cpu", "disk"}
    accelerate_utils.check_device_map(meta_model, device_map)
