"""The backend and strategies sections are built from their objects: what the registry and the strategy
list hold is exactly what a spec may say."""

import typing

import pytest
from pydantic import ValidationError

from qcompile.backends import all_backends
from qcompile.schemas.backend import BACKEND_KINDS, BACKEND_MODELS, default_options, with_backend
from qcompile.schemas.spec import Spec
from qcompile.schemas.strategies import StrategiesSpec
from qcompile.strategies import STRATEGIES

BASE = {"version": 1, "model": {"name": "m"}, "hardware": {"device_memory": "8GiB", "host_memory": "16GiB"},
        "data": {"path": "d.jsonl"}, "training": {"output_dir": "out"}}


def test_backend_kinds_are_auto_and_the_registry():
    assert BACKEND_KINDS == ("auto", *all_backends())
    for kind, backend in all_backends().items():
        model = BACKEND_MODELS[kind]
        assert set(model.model_fields) == {"kind", *backend.options.model_fields}
        assert model.model_fields["kind"].description == backend.description
        assert default_options(kind).kind == kind


@pytest.mark.parametrize("kind", list(all_backends()))
def test_string_and_mapping_forms_name_the_same_backend(kind):
    assert Spec.model_validate({**BASE, "backend": kind}).backend == Spec.model_validate(
        {**BASE, "backend": {"kind": kind}}).backend


def test_a_backends_options_are_refused_under_another_kind():
    with pytest.raises(ValidationError, match="extra_forbidden|Extra inputs"):
        Spec.model_validate({**BASE, "backend": {"kind": "deepspeed-zero2", "max_live_parameters": 5}})


def test_with_backend_keeps_the_specs_own_options_for_its_backend():
    spec = Spec.model_validate({**BASE, "backend": {"kind": "deepspeed-zero3", "reduce_bucket_size": 7}})
    assert with_backend(spec, "deepspeed-zero3").backend is spec.backend
    assert with_backend(spec, "deepspeed-zero2").backend == default_options("deepspeed-zero2")


def test_offload_params_left_null_is_the_backends_choice():
    spec = Spec.model_validate(BASE)
    assert spec.strategies.offload.params is None
    assert with_backend(spec, "accelerate-offload").strategies.offload.params == "cpu"
    assert with_backend(spec, "deepspeed-zero3").strategies.offload.params == "none"
    explicit = Spec.model_validate({**BASE, "strategies": {"offload": {"params": "none"}}})
    assert with_backend(explicit, "accelerate-offload").strategies.offload.params == "none"


def test_each_strategies_key_belongs_to_one_strategy_object():
    owned = [name for s in STRATEGIES if s.section == "strategies" for name in s.fields()]
    assert list(StrategiesSpec.model_fields) == owned
    sections = {"model": Spec.model_fields["model"].annotation, "lora": Spec.model_fields["lora"].annotation,
                "training": Spec.model_fields["training"].annotation, "strategies": StrategiesSpec}
    for strategy in STRATEGIES:
        for name in strategy.fields():  # each key a strategy adds is in its section, described
            assert sections[strategy.section].model_fields[name].description, (strategy.section, name)


def test_a_bare_yaml_no_still_means_no_mixed_precision():
    spec = Spec.model_validate({**BASE, "strategies": {"mixed_precision": False}})
    assert spec.strategies.mixed_precision == "no"
    assert typing.get_origin(StrategiesSpec.model_fields["mixed_precision"].annotation) is typing.Literal
