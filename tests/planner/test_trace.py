"""The analytic planner against traced training steps (one real forward, backward and AdamW step)."""

import json

import pytest

from qcompile.compiler.planner.activations import StepShape, step_activations
from qcompile.compiler.planner.architecture import Architecture

from .conftest import spec_from

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from qcompile.compiler.planner.trace import TraceCase, analytic_peak, trace_spec_peak, trace_step_peak  # noqa: E402

ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
WIDE = dict(vocab_size=256, hidden_size=128, intermediate_size=512)
GRID = [
    {}, dict(num_layers=4), dict(checkpointing=True), dict(num_layers=4, checkpointing=True),
    dict(seq_len=128, batch=2), dict(target_modules=ALL), dict(target_modules=ALL, checkpointing=True),
    dict(attention="eager"), dict(attention="eager", seq_len=128), dict(dropout=0.1),
    dict(dropout=0.1, target_modules=ALL), dict(adapter_dtype="same"), dict(adapter_dtype="same", target_modules=ALL),
    dict(layers=(1, 2), num_layers=4), dict(layers=(2,), num_layers=4, checkpointing=True), dict(dtype="float32"),
    dict(WIDE, num_kv_heads=4), dict(WIDE, checkpointing=True, target_modules=ALL), dict(r=32),
    dict(tie_word_embeddings=True), dict(target_modules=("down_proj",)),
    dict(target_modules=("gate_proj", "up_proj"), adapter_dtype="same", dropout=0.1),
]


def analytic(case: TraceCase) -> int:
    """Weights + adapters with AdamW states + the activation model, as the planner counts them."""
    arch = Architecture.from_config(case.config_dict(), "trace")
    e = 4 if case.dtype == "float32" else 2
    a = e if case.adapter_dtype == "same" else 4
    lora_layers = frozenset(arch.lora_layers(list(case.layers) if case.layers is not None else None))
    shape = StepShape(case.batch, case.seq_len, e, a, case.r, frozenset(case.target_modules), lora_layers,
                      case.checkpointing, case.attention, case.dropout, dropout_mask_bytes=None)
    acts = step_activations(arch, shape, range(arch.num_layers), True, True)
    lora = arch.lora_params(case.r, list(case.target_modules), sorted(lora_layers))
    return arch.num_params() * e + 3 * a * lora + acts.activations + acts.logits


@pytest.mark.parametrize("changes", GRID, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "base")
def test_analytic_within_5_percent_of_trace(changes):
    case = TraceCase(**changes)
    traced = trace_step_peak(case)
    assert abs(analytic(case) - traced) / traced < 0.05, (analytic(case), traced)


def test_fake_mode_trace_matches_real_trace():
    case = TraceCase(num_layers=3, target_modules=ALL)
    assert trace_step_peak(case, fake=True) == trace_step_peak(case)


def test_trace_of_a_spec_through_the_planner(tmp_path):
    """The spec path `qcompile plan --trace` uses: model.config -> plan -> fake-mode trace."""
    case = TraceCase(num_layers=3, hidden_size=128, intermediate_size=384, vocab_size=512)
    (tmp_path / "config.json").write_text(json.dumps(case.config_dict()))
    spec = spec_from(**{"model.config": str(tmp_path / "config.json"), "strategies.max_seq_length": 96,
                        "training.micro_batch_size": 2, "lora.dropout": 0.0})
    from qcompile.compiler.planner import resolve_architecture

    arch = resolve_architecture(spec, tmp_path)
    traced, predicted = trace_spec_peak(spec, arch)
    assert predicted == analytic_peak(spec, arch)
    assert abs(predicted - traced) / traced < 0.05, (predicted, traced)
