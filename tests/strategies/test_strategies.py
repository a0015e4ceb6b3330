"""Each strategy object: its rules and which backends accept it, its effect on the planned step, the
fixes it offers, and what it puts in train_config.json."""

import pytest

from qcompile.backends import get_backend
from qcompile.backends.train_config import build_train_config
from qcompile.compiler.planner.plan import memory_context
from qcompile.compiler.rules import backend_rules
from qcompile.strategies import STRATEGIES
from qcompile.strategies.checkpointing import STRATEGY as CHECKPOINTING
from qcompile.strategies.max_seq_length import STRATEGY as MAX_SEQ_LENGTH
from qcompile.strategies.offload import STRATEGY as OFFLOAD
from tests.compiler.planner.conftest import EXAMPLE, context, spec_from

ZERO2, ZERO3 = get_backend("deepspeed-zero2"), get_backend("deepspeed-zero3")
NAIVE, OFFLOADING = get_backend("naive-model-parallel"), get_backend("accelerate-offload")


def codes(spec, backend):
    return [(d.code, d.severity, d.path) for d in backend_rules(spec, backend)]


def test_step_shape_comes_from_the_strategies():
    spec = spec_from(**{"strategies.max_seq_length": 1024, "strategies.gradient_checkpointing": False,
                        "strategies.attention": "eager"})
    shape = memory_context(spec, context(spec).arch).shape(4)
    assert (shape.seq, shape.checkpointing, shape.attention) == (1024, False, "eager")


def test_mixed_precision_rules():
    mixed = spec_from(**{"strategies.mixed_precision": "fp16", "model.dtype": "bfloat16"})
    assert ("fp16_and_bf16", "error", ("strategies", "mixed_precision")) in codes(mixed, ZERO3)
    v100 = spec_from(**{"hardware.gpu": "V100"})
    assert ("bf16_unsupported", "warning", ("strategies", "mixed_precision")) in codes(v100, ZERO3)


@pytest.mark.parametrize("place, backend, accepted", [
    ("cpu", ZERO2, False), ("cpu", ZERO3, True), ("disk", ZERO3, False), ("disk", NAIVE, True),
    ("cpu", OFFLOADING, True),
])
def test_parameter_offload_is_accepted_where_the_backend_says(place, backend, accepted):
    spec = spec_from(**{"strategies.offload": {"params": place, "optimizer": "none"}})
    refused = [c for c in codes(spec, backend) if c[0] == "offload_unsupported"]
    assert (not refused) == accepted
    if refused:
        assert backend.kind in backend_rules(spec, backend)[0].message


def test_optimizer_offload_only_on_backends_that_accept_it():
    spec = spec_from(**{"strategies.offload": {"params": "none", "optimizer": "cpu"}})
    [refusal] = [d for d in backend_rules(spec, NAIVE) if d.code == "offload_unsupported"]
    assert "deepspeed-zero2 or deepspeed-zero3" in refusal.hint
    assert not [d for d in backend_rules(spec, ZERO2) if d.is_error]


def test_fixes_are_settings_that_use_less_memory():
    spec = spec_from(**{"strategies.gradient_checkpointing": False, "strategies.max_seq_length": 1024})
    assert CHECKPOINTING.fixes(spec, ZERO3) == [("strategies.gradient_checkpointing: true",
                                                 {"strategies.gradient_checkpointing": True})]
    assert [c for _, c in MAX_SEQ_LENGTH.fixes(spec, ZERO3)] == [{"strategies.max_seq_length": 512},
                                                                 {"strategies.max_seq_length": 256}]
    assert OFFLOAD.fixes(spec, ZERO3) and not OFFLOAD.fixes(spec, NAIVE)  # only where the backend accepts it


def test_train_config_holds_what_each_strategy_declares():
    spec = spec_from(**{"strategies.attention": "eager", "strategies.max_seq_length": 512})
    config = build_train_config(context(spec, EXAMPLE.parent).for_backend(ZERO3))
    for strategy in STRATEGIES:
        for section, values in strategy.train_config(spec).items():
            assert {k: config[section][k] for k in values} == values
    assert config["model"]["attention"] == "eager" and config["strategies"]["max_seq_length"] == 512
