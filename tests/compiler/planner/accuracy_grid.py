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
from qcompile.compiler.planner.trace import TraceCase, TracedPeak, analytic
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


def spec_data(case: TraceCase, folder: Path) -> dict:
    """The spec (as plain data) of this shape, one CPU device holding everything as the tracer runs it;
    its model.config is written into `folder`. Plain data so that another checkout can plan it too."""
    (folder / "config.json").write_text(json.dumps(case.config_dict()))
    return {
        "version": 1,
        "model": {"name": "trace-case", "config": str(folder / "config.json"), "dtype": case.dtype},
        "hardware": {"accelerator": "cpu", "devices_per_node": 1, "device_memory": "1TiB", "host_memory": "1TiB"},
        "lora": {"r": case.r, "alpha": 2 * case.r, "dropout": case.dropout, "target_modules": list(case.target_modules),
                 "layers": list(case.layers) if case.layers is not None else None,
                 "dtype": "float32" if case.adapter_dtype == "same" else case.adapter_dtype},
        "strategies": {"gradient_checkpointing": case.checkpointing, "attention": case.attention,
                       "max_seq_length": case.seq_len, "mixed_precision": case.mixed_precision,
                       "loss": case.loss, "loss_chunk_size": case.loss_chunk_size,
                       "activation_offload": case.activation_offload,
                       "activation_compression": case.activation_compression},
        "backend": NAIVE_MODEL_PARALLEL.kind,
        "data": {"path": "data.jsonl", "format": "text"},
        "training": {"micro_batch_size": case.batch, "max_steps": 1, "output_dir": "out"},
    }


def spec_for_case(case: TraceCase, folder: Path) -> Spec:
    """A spec of this shape whose model.config is written into `folder`."""
    return Spec.model_validate(spec_data(case, folder))


def planned_peak(case: TraceCase, folder: Path) -> int:
    """The plan's tensor bytes for the one device that holds the case's whole model."""
    return planned(case, folder).device


def planned(case: TraceCase, folder: Path) -> TracedPeak:
    """The plan's figures for what the trace runs: the device's tensor bytes, and the host bytes of
    offloaded activations (planned as on CUDA: see trace.analytic)."""
    spec = spec_for_case(case, folder)
    return analytic(spec, resolve_architecture(spec, folder))


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


# ---------------------------------------------------------------- the held-out grid (issue 11)
# Real models' shapes at full width and few layers, traced under FakeTensorMode: every precision and
# dtype pair the script can run, sequence 512-8192, micro-batch 1-8, r 8-64, attention-only and
# all-linear; each case is planned and traced with checkpointing on and off.
HELDOUT_MODELS = (
    "Qwen/Qwen1.5-0.5B", "Qwen/Qwen1.5-7B", "Qwen/Qwen1.5-72B", "Qwen/Qwen2-1.5B", "Qwen/Qwen2-7B",
    "Qwen/Qwen2-72B", "Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-72B", "meta-llama/Llama-2-7b-hf",
    "meta-llama/Llama-2-70b-hf", "meta-llama/Meta-Llama-3-8B", "meta-llama/Llama-3.2-1B",
    "mistralai/Mistral-7B-v0.1", "mistralai/Mistral-7B-v0.3",
)
PRECISIONS = (  # (model.dtype, strategies.mixed_precision)
    ("bfloat16", "bf16"), ("bfloat16", "no"), ("float32", "bf16"), ("float32", "no"),
    ("float16", "fp16"), ("float32", "fp16"), ("float16", "no"),
)
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


def catalog_shape(name: str, layers: int) -> dict:
    """TraceCase fields of a catalog model, cut to `layers` decoder layers at full width."""
    from qcompile.compiler.planner.resolve import CATALOG_DIR

    for path in sorted(CATALOG_DIR.glob("*.json")):
        entry = json.loads(path.read_text())["models"].get(name)
        if entry is not None:
            c = entry["config"]
            return dict(model_type=c["model_type"], num_layers=layers, hidden_size=c["hidden_size"],
                        intermediate_size=c["intermediate_size"], num_heads=c["num_attention_heads"],
                        num_kv_heads=c["num_key_value_heads"], vocab_size=c["vocab_size"],
                        tie_word_embeddings=c["tie_word_embeddings"])
    raise KeyError(name)


def heldout_grid() -> list[tuple[str, dict]]:
    """36 cases, each varying model, precision, sequence, micro-batch, r, targets and adapter dtype;
    every one appears twice, checkpointing off and on."""
    cases = []
    for k in range(36):
        model = HELDOUT_MODELS[k % len(HELDOUT_MODELS)]
        dtype, mp = PRECISIONS[k % len(PRECISIONS)]
        changes = dict(
            catalog_shape(model, 2 + k % 2), dtype=dtype, mixed_precision=mp,
            seq_len=(512, 1024, 2048, 4096, 8192)[k % 5], batch=(1, 2, 4, 8)[(k // 5) % 4 if k % 5 < 3 else 0],
            r=(8, 16, 32, 64)[k % 4], target_modules=ALL_MODULES if k % 3 else ATTENTION,
            adapter_dtype="bfloat16" if k % 6 == 5 and dtype != "float16" else "float32",
            dropout=0.05 if k % 9 == 4 else 0.0,
        )
        for checkpointing in (False, True):
            cases.append((f"{model.split('/')[1]} {dtype}/{mp} s{changes['seq_len']} b{changes['batch']} "
                          f"r{changes['r']} {'all' if k % 3 else 'attn'}{' ckpt' if checkpointing else ''}",
                          dict(changes, checkpointing=checkpointing)))
    return cases


# ---------------------------------------------------------------- issue 11's strategies
# Full-width, two-layer shapes traced with each new strategy (the script's own parts run in the trace),
# checkpointing off and on: the device peak, and for activation offload the host's bytes too.
STRATEGY_SHAPES = (
    ("Qwen1.5-7B bf16/bf16 s1024 all", dict(catalog_shape("Qwen/Qwen1.5-7B", 2), seq_len=1024, r=16,
                                            target_modules=ALL_MODULES, mixed_precision="bf16")),
    ("Llama-3-8B bf16/no s2048 attn", dict(catalog_shape("meta-llama/Meta-Llama-3-8B", 2), seq_len=2048, r=8,
                                           target_modules=ATTENTION)),
    ("Mistral-7B fp32/bf16 s1024 all", dict(catalog_shape("mistralai/Mistral-7B-v0.1", 2), seq_len=1024, r=8,
                                            dtype="float32", target_modules=ALL_MODULES, mixed_precision="bf16")),
)
STRATEGY_VARIANTS = (
    ("chunked", dict(loss="chunked")), ("chunked 256", dict(loss="chunked", loss_chunk_size=256)),
    ("int8", dict(activation_compression="int8")), ("fp8", dict(activation_compression="fp8")),
    ("offload", dict(activation_offload=True)), ("offload+chunked", dict(activation_offload=True, loss="chunked")),
)


def strategy_grid() -> list[tuple[str, dict]]:
    """Every shape with every strategy variant, checkpointing off and on."""
    return [(f"{shape} {variant}{' ckpt' if checkpointing else ''}", dict(s, **v, checkpointing=checkpointing))
            for shape, s in STRATEGY_SHAPES for variant, v in STRATEGY_VARIANTS for checkpointing in (False, True)]
