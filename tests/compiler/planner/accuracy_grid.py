"""The planner-vs-trace grid: each case is a TraceCase shape; the analytic side is `plan()` of a spec
with that shape (one CPU device holding everything, as the tracer runs it). Shared by
test_trace.py and bench/planner_accuracy.py."""

from __future__ import annotations

import json
from pathlib import Path

from qcompile.backends.naive_mp import NAIVE_MODEL_PARALLEL
from qcompile.compiler.planner import resolve_architecture
from qcompile.compiler.planner.activations import StepShape, step_activations
from qcompile.compiler.planner.architecture import Architecture
from qcompile.compiler.planner.plan import plan
from qcompile.compiler.planner.trace import TraceCase
from qcompile.schemas.spec import Spec

ALL_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
WIDE = dict(vocab_size=256, hidden_size=128, intermediate_size=512)
ACCURACY_GRID = [
    {}, dict(num_layers=4), dict(checkpointing=True), dict(num_layers=4, checkpointing=True),
    dict(seq_len=128, batch=2), dict(target_modules=ALL_MODULES), dict(target_modules=ALL_MODULES, checkpointing=True),
    dict(attention="eager"), dict(attention="eager", seq_len=128), dict(dropout=0.1),
    dict(dropout=0.1, target_modules=ALL_MODULES), dict(layers=(1, 2), num_layers=4),
    dict(layers=(2,), num_layers=4, checkpointing=True), dict(dtype="float32"),
    dict(WIDE, num_kv_heads=4), dict(WIDE, checkpointing=True, target_modules=ALL_MODULES), dict(r=32),
    dict(tie_word_embeddings=True), dict(target_modules=("down_proj",)),
]
# DeepSpeed's engine casts the adapters to the base dtype; no single-device plan runs that, so these
# cases check the activation model (step_activations) directly.
SAME_DTYPE_ADAPTER_GRID = [
    dict(adapter_dtype="same"), dict(adapter_dtype="same", target_modules=ALL_MODULES),
    dict(target_modules=("gate_proj", "up_proj"), adapter_dtype="same", dropout=0.1),
]


def case_name(changes: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in changes.items()) or "base"


def spec_for_case(case: TraceCase, folder: Path) -> Spec:
    """A spec of this shape whose model.config is written into `folder`."""
    (folder / "config.json").write_text(json.dumps(case.config_dict()))
    return Spec.model_validate({
        "version": 1,
        "model": {"name": "trace-case", "config": str(folder / "config.json"), "dtype": case.dtype},
        "hardware": {"accelerator": "cpu", "devices_per_node": 1, "device_memory": "1TiB", "host_memory": "1TiB"},
        "lora": {"r": case.r, "alpha": 2 * case.r, "dropout": case.dropout, "target_modules": list(case.target_modules),
                 "layers": list(case.layers) if case.layers is not None else None},
        "strategies": {"gradient_checkpointing": case.checkpointing, "attention": case.attention,
                       "max_seq_length": case.seq_len, "mixed_precision": case.mixed_precision},
        "backend": NAIVE_MODEL_PARALLEL.kind,
        "data": {"path": "data.jsonl", "format": "text"},
        "training": {"micro_batch_size": case.batch, "max_steps": 1, "output_dir": "out"},
    })


def planned_peak(case: TraceCase, folder: Path) -> int:
    """The plan's tensor bytes for the one device that holds the case's whole model."""
    spec = spec_for_case(case, folder)
    return plan(spec, resolve_architecture(spec, folder), NAIVE_MODEL_PARALLEL).devices[0].tensor_bytes


def same_dtype_adapter_peak(case: TraceCase) -> int:
    """Weights + adapters with AdamW states (in the base dtype) + the activation model."""
    arch = Architecture.from_config(case.config_dict(), "trace")
    e = 4 if case.dtype == "float32" else 2
    lora_layers = frozenset(arch.lora_layers(list(case.layers) if case.layers is not None else None))
    shape = StepShape(case.batch, case.seq_len, e, e, case.r, frozenset(case.target_modules), lora_layers,
                      case.checkpointing, case.attention, case.dropout, dropout_mask_bytes=None)
    acts = step_activations(arch, shape, range(arch.num_layers), True, True)
    lora = arch.lora_params(case.r, list(case.target_modules), sorted(lora_layers))
    return arch.num_params() * e + 3 * e * lora + acts.activations + acts.logits
