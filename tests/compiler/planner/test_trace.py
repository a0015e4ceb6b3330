"""The analytic planner against traced training steps (one real forward, backward and AdamW step)."""

import json

import pytest

from qcompile.compiler.planner import resolve_architecture

from .conftest import spec_from

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from qcompile.compiler.planner.trace import (  # noqa: E402
    TraceCase,
    analytic_peak,
    case_for_spec,
    trace_spec,
    trace_spec_peak,
    trace_step,
    trace_step_peak,
)

from .accuracy_grid import (  # noqa: E402
    ACCURACY_GRID,
    SAME_DTYPE_ADAPTER_GRID,
    case_name,
    catalog_shape,
    heldout_grid,
    planned,
    planned_peak,
    same_dtype_adapter_peak,
    strategy_grid,
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


# A fast subset of the held-out grid (bench/planner_accuracy.py runs all 72): full width, two or three
# layers, every precision pair, checkpointing off and on in turn. Fake tensors: no byte is allocated.
HELDOUT_SUBSET = [heldout_grid()[2 * k + j % 2] for j, k in enumerate((0, 1, 4, 5, 9, 10, 20, 23))]


@pytest.mark.parametrize("changes", [c for _, c in HELDOUT_SUBSET], ids=[n for n, _ in HELDOUT_SUBSET])
def test_plan_within_2_percent_of_full_width_trace(changes, tmp_path):
    case = TraceCase(**changes)
    traced, planned = trace_step_peak(case, fake=True), planned_peak(case, tmp_path)
    assert abs(planned - traced) / traced < 0.02, (planned, traced)


def test_heldout_subset_covers_every_precision_pair_and_checkpointing():
    pairs = {(c["dtype"], c["mixed_precision"]) for _, c in HELDOUT_SUBSET}
    assert len(pairs) == 7
    assert {c["checkpointing"] for _, c in HELDOUT_SUBSET} == {False, True}


@pytest.mark.parametrize("changes", [
    dict(mixed_precision="bf16", dtype="float32", checkpointing=True, target_modules=("q_proj", "down_proj")),
    dict(mixed_precision="bf16", tie_word_embeddings=True, num_layers=3),
    dict(mixed_precision="fp16", dtype="float32", target_modules=ALL, dropout=0.1),
], ids=["fp32-bf16-checkpointing", "bf16-tied", "fp32-fp16-dropout"])
def test_fake_trace_equals_real_trace_under_autocast(changes):
    """The fake-mode trace allocates what the real run does: no s x s mask sdpa skips, one tied weight."""
    case = TraceCase(**{"seq_len": 256, **changes})
    assert trace_step_peak(case, fake=True) == trace_step_peak(case)


def test_autocast_over_fp32_weights_keeps_compute_dtype_copies(tmp_path):
    """Cause 2 of issue 11: bf16 copies of fp32 frozen weights (lm_head's included) live until backward."""
    shape = dict(catalog_shape("Qwen/Qwen2.5-7B", 2), seq_len=1024)
    plain = TraceCase(**shape, dtype="float32")
    autocast = TraceCase(**shape, dtype="float32", mixed_precision="bf16")
    head_copy = 2 * shape["vocab_size"] * shape["hidden_size"]
    assert trace_step_peak(autocast, fake=True) - trace_step_peak(plain, fake=True) > head_copy // 2
    assert abs(planned_peak(autocast, tmp_path) - trace_step_peak(autocast, fake=True)) < 2**20


def test_trace_of_a_spec_runs_it_as_the_script_does(tmp_path):
    """`qcompile plan --trace`: autocast and the adapter dtype come from the spec."""
    case = TraceCase(num_layers=2, hidden_size=128, intermediate_size=384, vocab_size=512, dtype="float32")
    (tmp_path / "config.json").write_text(json.dumps(case.config_dict()))
    spec = spec_from(**{"model.config": str(tmp_path / "config.json"), "model.dtype": "float32",
                        "strategies.max_seq_length": 64, "strategies.mixed_precision": "bf16",
                        "lora.dropout": 0.0, "training.micro_batch_size": 1})
    arch = resolve_architecture(spec, tmp_path)
    from qcompile.compiler.planner.trace import case_for_spec

    assert case_for_spec(spec, arch).mixed_precision == "bf16"
    traced, predicted = trace_spec_peak(spec, arch)
    assert abs(predicted - traced) / traced < 0.02, (predicted, traced)


# Issue 11's strategies: the trace runs the script's own parts (chunked loss, compression and offload hooks);
# offloaded tensors are counted on the host. Qwen (bf16) and Mistral (autocast over fp32 weights, sequence
# = k_proj's width) with every variant; Llama with two (bench/planner_accuracy.py prints them all).
STRATEGY_CASES = [(n, c) for n, c in strategy_grid()
                  if not n.startswith("Llama") or n.removesuffix(" ckpt").endswith(("offload", "int8"))]


@pytest.mark.parametrize("changes", [c for _, c in STRATEGY_CASES], ids=[n for n, _ in STRATEGY_CASES])
def test_plan_within_2_percent_of_trace_with_each_strategy(changes, tmp_path):
    case = TraceCase(**changes)
    traced, predicted = trace_step(case, fake=True), planned(case, tmp_path)
    assert abs(predicted.device - traced.device) / traced.device < 0.02, (predicted, traced)
    assert (traced.host > 0) == case.activation_offload
    if case.activation_offload:
        assert abs(predicted.host - traced.host) / traced.host < 0.02, (predicted, traced)


def test_trace_applies_the_strategies_of_a_spec(tmp_path):
    """`qcompile plan --trace` of a spec with the chunked loss and offload traces them, not the standard step."""
    case = TraceCase(num_layers=2, hidden_size=128, intermediate_size=384, vocab_size=4096)
    (tmp_path / "config.json").write_text(json.dumps(case.config_dict()))
    values = {"model.config": str(tmp_path / "config.json"), "strategies.max_seq_length": 256,
              "lora.dropout": 0.0, "training.micro_batch_size": 1}
    standard = spec_from(**values)
    changed = spec_from(**values, **{"strategies.loss": "chunked", "strategies.loss_chunk_size": 32,
                                     "strategies.activation_offload": True})
    arch = resolve_architecture(standard, tmp_path)
    assert case_for_spec(changed, arch).loss == "chunked" and case_for_spec(changed, arch).activation_offload
    (plain, _), (traced, predicted) = trace_spec(standard, arch), trace_spec(changed, arch)
    assert plain.host == 0 < traced.host and traced.device < plain.device
    assert abs(predicted.device - traced.device) / traced.device < 0.02, (predicted, traced)
    assert abs(predicted.host - traced.host) / traced.host < 0.02, (predicted, traced)


def test_cli_trace_reports_the_offloaded_bytes_and_keeps_json_clean(tmp_path):
    """The parts log what they do; `plan --trace --json` must still print one JSON document."""
    import yaml
    from click.testing import CliRunner

    from qcompile.cli.plan import plan

    from .conftest import EXAMPLE

    case = TraceCase(num_layers=2, hidden_size=128, intermediate_size=384, vocab_size=4096)
    (tmp_path / "config.json").write_text(json.dumps(case.config_dict()))
    data = yaml.safe_load(EXAMPLE.read_text())
    data["model"]["config"] = str(tmp_path / "config.json")
    data["strategies"].update({"max_seq_length": 256, "loss": "chunked", "loss_chunk_size": 64,
                               "activation_offload": True})
    data["lora"]["dropout"] = 0.0
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(plan, [str(tmp_path / "spec.yaml"), "--backend", "naive-model-parallel", "--trace",
                                       "--json"])
    assert "offloaded to the host: traced" in json.loads(result.output)["trace"], result.output
