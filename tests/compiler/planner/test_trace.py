"""The analytic planner against traced training steps (one real forward, backward and AdamW step)."""

import json

import pytest

from qcompile.compiler.planner import resolve_architecture

from .conftest import spec_from

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from qcompile.compiler.planner.trace import TraceCase, analytic_peak, trace_spec_peak, trace_step_peak  # noqa: E402

from .accuracy_grid import (  # noqa: E402
    ACCURACY_GRID,
    SAME_DTYPE_ADAPTER_GRID,
    case_name,
    planned_peak,
    same_dtype_adapter_peak,
)
from .accuracy_grid import (
    ALL_MODULES as ALL,
)


@pytest.mark.parametrize("changes", ACCURACY_GRID, ids=case_name)
def test_plan_within_5_percent_of_trace(changes, tmp_path):
    case = TraceCase(**changes)
    traced, planned = trace_step_peak(case), planned_peak(case, tmp_path)
    assert abs(planned - traced) / traced < 0.05, (planned, traced)


@pytest.mark.parametrize("changes", SAME_DTYPE_ADAPTER_GRID, ids=case_name)
def test_activation_model_with_same_dtype_adapters_within_5_percent(changes):
    case = TraceCase(**changes)
    traced, analytic = trace_step_peak(case), same_dtype_adapter_peak(case)
    assert abs(analytic - traced) / traced < 0.05, (analytic, traced)


def test_fake_mode_trace_matches_real_trace():
    case = TraceCase(num_layers=3, target_modules=ALL)
    assert trace_step_peak(case, fake=True) == trace_step_peak(case)


def test_trace_of_a_spec_through_the_planner(tmp_path):
    """The spec path `qcompile plan --trace` uses: model.config -> plan -> fake-mode trace."""
    case = TraceCase(num_layers=3, hidden_size=128, intermediate_size=384, vocab_size=512)
    (tmp_path / "config.json").write_text(json.dumps(case.config_dict()))
    spec = spec_from(**{"model.config": str(tmp_path / "config.json"), "strategies.max_seq_length": 96,
                        "training.micro_batch_size": 2, "lora.dropout": 0.0})
    arch = resolve_architecture(spec, tmp_path)
    traced, predicted = trace_spec_peak(spec, arch)
    assert predicted == analytic_peak(spec, arch)
    assert abs(predicted - traced) / traced < 0.05, (predicted, traced)
