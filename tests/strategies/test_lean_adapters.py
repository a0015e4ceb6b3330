"""The quantisation, optimizer, adapter-method and adapter-dtype strategies: every combination a backend
cannot run is a spec error with a hint naming backends that can; all-linear resolves per architecture;
the fixes the planner may suggest."""

import pytest
from pydantic import ValidationError

from qcompile.backends import get_backend
from qcompile.backends.train_config import build_train_config
from qcompile.compiler.planner.architecture import Architecture
from qcompile.compiler.planner.memory import resolve_targets
from qcompile.compiler.rules import backend_rules
from qcompile.strategies.optimizer import STRATEGY as OPTIMIZER
from qcompile.strategies.quantization import STRATEGY as QUANTIZATION
from tests.compiler.planner.conftest import EXAMPLE, context, spec_from

ZERO2, ZERO3 = get_backend("deepspeed-zero2"), get_backend("deepspeed-zero3")
NAIVE, OFFLOADING = get_backend("naive-model-parallel"), get_backend("accelerate-offload")
Q4 = {"bits": 4}


def errors(spec, backend):
    return {(d.code, d.path): d for d in backend_rules(spec, backend) if d.is_error}


@pytest.mark.parametrize("changes, backend, code, path", [
    ({"model.quantization": Q4}, ZERO3, "quantization_unsupported", ("model", "quantization")),
    ({"model.quantization": Q4, "strategies.offload": {"optimizer": "none", "params": "cpu"}}, NAIVE,
     "quantization_with_offload", ("model", "quantization")),
    ({"lora.method": "adalora", "lora.target_r": 4}, ZERO2, "method_unsupported", ("lora", "method")),
    ({"lora.method": "adalora", "lora.target_r": 4}, ZERO3, "method_unsupported", ("lora", "method")),
    ({"lora.method": "adalora"}, NAIVE, "adalora_target_r", ("lora", "target_r")),
    ({"lora.method": "adalora", "lora.target_r": 32}, NAIVE, "adalora_target_r", ("lora", "target_r")),
    ({"lora.method": "adalora", "lora.target_r": 4, "strategies.offload": {"optimizer": "none", "params": "disk"}},
     NAIVE, "method_unsupported", ("lora", "method")),
    ({"lora.method": "adalora", "lora.target_r": 4, "training.max_steps": 10,
      "lora.adalora": {"tinit": 5, "tfinal": 5}}, NAIVE, "adalora_schedule", ("lora", "adalora")),
    ({"lora.target_r": 4}, NAIVE, "target_r_without_adalora", ("lora", "target_r")),
    ({"lora.adalora": {"tinit": 3}}, NAIVE, "target_r_without_adalora", ("lora", "adalora")),
    ({"lora.method": "dora", "model.quantization": {"bits": 8}}, NAIVE, "method_unsupported", ("lora", "method")),
])
def test_unsupported_combinations_are_spec_errors_with_a_hint(changes, backend, code, path):
    found = errors(spec_from(**changes), backend)
    assert (code, path) in found, sorted(found)
    assert found[(code, path)].hint


def test_the_hint_names_backends_that_accept_it():
    found = errors(spec_from(**{"model.quantization": Q4}), ZERO3)[("quantization_unsupported",
                                                                    ("model", "quantization"))]
    assert "deepspeed-zero2" in found.hint and "zero.Init" in found.message


@pytest.mark.parametrize("changes, backend", [
    # each ran for real on 2 CPU ranks (tests/training/test_qlora_runs.py runs the first two)
    ({"model.quantization": {"bits": 8}}, ZERO2),
    ({"lora.method": "dora"}, ZERO3),
    ({"training.optimizer": "adamw_8bit", "strategies.offload": {"optimizer": "cpu", "params": "none"}}, ZERO2),
])
def test_combinations_measured_to_work_are_accepted(changes, backend):
    assert not errors(spec_from(**changes), backend)


@pytest.mark.parametrize("changes", [
    {"model.quantization": Q4, "training.optimizer": "paged_adamw_8bit", "lora.method": "dora"},
    {"model.quantization": {"bits": 8, "compute_dtype": "float32"}, "lora.method": "adalora", "lora.target_r": 4},
    {"model.quantization": {"bits": 4}, "lora.method": "dora"},
    {"model.quantization": {"bits": 4, "type": "fp4", "double_quant": False}, "lora.method": "rslora",
     "lora.dtype": "bfloat16"},
])
def test_supported_combinations_pass_on_the_single_process_backends(changes):
    for backend in (NAIVE, OFFLOADING):
        assert not errors(spec_from(**changes), backend)


def test_zero2_takes_a_4bit_base_and_8bit_adam():
    assert not errors(spec_from(**{"model.quantization": Q4, "training.optimizer": "adamw_8bit"}), ZERO2)


@pytest.mark.parametrize("quantization, message", [
    ({"bits": 8, "type": "nf4"}, "4-bit setting"),
    ({"bits": 3}, "bits"),
    ({"bits": 4, "compute_dtype": "int8"}, "compute_dtype"),
])
def test_quantization_keys_are_checked(quantization, message):
    with pytest.raises(ValidationError, match=message):
        spec_from(**{"model.quantization": quantization})


def test_target_modules_accepts_only_all_linear_as_a_string():
    assert spec_from(**{"lora.target_modules": "all-linear"}).lora.target_modules == "all-linear"
    with pytest.raises(ValidationError):
        spec_from(**{"lora.target_modules": "q_proj"})


@pytest.mark.parametrize("model_type, expected", [
    ("qwen2", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    ("llama", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
])
def test_all_linear_resolves_against_the_architecture(model_type, expected):
    arch = Architecture.from_config({"model_type": model_type, "num_hidden_layers": 2, "hidden_size": 64,
                                     "intermediate_size": 128, "num_attention_heads": 4, "vocab_size": 100},
                                    "test")
    assert resolve_targets("all-linear", arch) == expected
    assert resolve_targets("all-linear", None) == "all-linear"  # peft's own resolution in the job


def test_all_linear_reaches_train_config_and_the_plan():
    spec = spec_from(**{"lora.target_modules": "all-linear"})
    ctx = context(spec).for_backend(NAIVE)
    assert build_train_config(ctx)["lora"]["target_modules"][-1] == "down_proj"
    narrow = context(spec_from()).for_backend(NAIVE)
    assert ctx.plan.architecture["lora_params"] > 2 * narrow.plan.architecture["lora_params"]


def test_train_config_carries_the_new_keys():
    spec = spec_from(**{"model.quantization": {"bits": 4, "type": "fp4"}, "training.optimizer": "paged_adamw_8bit",
                        "lora.method": "adalora", "lora.target_r": 4})
    config = build_train_config(context(spec, EXAMPLE.parent).for_backend(NAIVE))
    assert config["model"]["quantization"] == {"bits": 4, "type": "fp4", "double_quant": True,
                                               "compute_dtype": "bfloat16"}
    assert config["training"]["optim"] == "paged_adamw_8bit"
    assert config["lora"]["method"] == "adalora" and config["lora"]["target_r"] == 4
    assert config["lora"]["adalora"]["tinit"] is None  # derived from the run length in train.py


def test_fixes_offer_quantization_and_8bit_adam_where_accepted():
    spec = spec_from()
    assert [c for c, _ in QUANTIZATION.fixes(spec, NAIVE)] == ["model.quantization: {bits: 4}",
                                                                "model.quantization: {bits: 8}"]
    assert [c for c, _ in QUANTIZATION.fixes(spec, ZERO2)] == ["model.quantization: {bits: 4}",
                                                                "model.quantization: {bits: 8}"]
    assert QUANTIZATION.fixes(spec, ZERO3) == []
    assert OPTIMIZER.fixes(spec, NAIVE) == [("training.optimizer: adamw_8bit", {"training.optimizer": "adamw_8bit"})]
