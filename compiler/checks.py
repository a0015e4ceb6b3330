"""Cross-field rules that real runs only trip over hours in, checked at compile time instead."""

from __future__ import annotations

from pathlib import Path

from qcompile.schemas import Spec
from qcompile.schemas.hardware import NO_BF16_GPUS

from .diagnostics import Diagnostic, error, warning

# Which backends can keep frozen base weights off the device, and which can offload optimizer states.
PARAM_OFFLOAD = {
    "deepspeed-zero2": (),
    "deepspeed-zero3": ("cpu",),
    "accelerate-offload": ("cpu", "disk"),
    "naive-model-parallel": ("cpu", "disk"),
}
PLACES_LAYERS = ("accelerate-offload", "naive-model-parallel")


def _precision_rules(spec: Spec) -> list[Diagnostic]:
    out = []
    mp, dtype = spec.strategies.mixed_precision, spec.model.dtype
    if (mp, dtype) in (("bf16", "float16"), ("fp16", "bfloat16")):
        out.append(error(("strategies", "mixed_precision"),
                         f"mixed_precision {mp} with {dtype} weights mixes fp16 and bf16", "fp16_and_bf16",
                         f"use mixed_precision: {'fp16' if dtype == 'float16' else 'bf16'}, "
                         f"or model.dtype: {'bfloat16' if mp == 'bf16' else 'float16'}"))
    gpu = (spec.hardware.gpu or "").upper().replace(" ", "").replace("-", "")
    uses_bf16 = mp == "bf16" or dtype == "bfloat16"
    if uses_bf16 and spec.hardware.accelerator == "cuda" and any(gpu.startswith(g) for g in NO_BF16_GPUS):
        out.append(warning(("strategies", "mixed_precision"),
                           f"{spec.hardware.gpu} has no native bfloat16; bf16 will be slow or refused",
                           "bf16_unsupported", "use fp16 with float16 weights on this GPU"))
    if mp == "fp16" and spec.hardware.accelerator == "cpu":
        out.append(warning(("strategies", "mixed_precision"), "fp16 autocast on CPU is slow and partly unsupported",
                           "fp16_on_cpu", "use bf16 or \"no\" on CPU"))
    return out


def _backend_rules(spec: Spec, kind: str) -> list[Diagnostic]:
    out = []
    offload = spec.strategies.offload
    if kind in PARAM_OFFLOAD and offload.params != "none" and offload.params not in PARAM_OFFLOAD[kind]:
        able = [k for k, places in PARAM_OFFLOAD.items() if offload.params in places]
        out.append(error(("strategies", "offload", "params"),
                         f"{kind} cannot offload parameters to {offload.params}", "offload_unsupported",
                         f"use backend {' or '.join(able)}, or offload.params: none"))
    if offload.optimizer != "none" and kind in PLACES_LAYERS:
        out.append(error(("strategies", "offload", "optimizer"),
                         f"optimizer offload is a DeepSpeed feature; {kind} keeps LoRA optimizer states with "
                         "their parameters", "offload_unsupported",
                         "use backend deepspeed-zero2, or offload.optimizer: none"))
    if spec.model.device_map is not None and kind not in PLACES_LAYERS:
        out.append(error(("model", "device_map"), f"{kind} shards the model itself; device_map places whole "
                         "layers on devices and cannot be combined with ZeRO", "zero_with_device_map",
                         "remove model.device_map, or use naive-model-parallel / accelerate-offload"))
    if spec.model.device_map is not None and kind == "naive-model-parallel":
        out.append(warning(("model", "device_map"), "naive-model-parallel loads the split its memory plan "
                           "computes (see `qcompile plan`); model.device_map is not used", "device_map_ignored",
                           "remove model.device_map, or use accelerate-offload to let accelerate place layers"))
    if kind == "naive-model-parallel" and spec.hardware.nodes > 1:
        out.append(error(("hardware", "nodes"), "naive-model-parallel runs one process per model replica on one "
                         "node; several nodes would need several replicas", "naive_mp_processes",
                         "set hardware.nodes: 1, or use deepspeed-zero2 for data parallelism"))
    return out


def _batch_rule(spec: Spec, data_parallel: int) -> list[Diagnostic]:
    t = spec.training
    computed = t.micro_batch_size * t.gradient_accumulation_steps * data_parallel
    if t.global_batch_size is not None and t.global_batch_size != computed:
        return [error(("training", "global_batch_size"),
                      f"{t.global_batch_size} != micro_batch_size {t.micro_batch_size} x "
                      f"gradient_accumulation_steps {t.gradient_accumulation_steps} x {data_parallel} "
                      f"data-parallel ranks = {computed}", "batch_arithmetic",
                      f"set global_batch_size: {computed}, or remove it (qcompile computes it)")]
    return []


def _data_rule(spec: Spec, spec_dir: Path) -> list[Diagnostic]:
    from .input_checks import input_diagnostics  # the data file, where the run writes, the config.json

    return input_diagnostics(spec, spec_dir)


def _rules_for(spec: Spec, kind: str) -> list[Diagnostic]:
    from qcompile.backends.registry import get_backend

    backend = get_backend(kind)
    return _backend_rules(spec, kind) + backend.check(spec) + _batch_rule(spec, backend.data_parallel_size(spec))


def resolve_auto(spec: Spec, spec_dir: Path) -> tuple[str | None, list[Diagnostic]]:
    """`backend: auto`: the fastest backend whose plan fits the budget and whose rules accept the spec."""
    from qcompile.compiler import planner

    try:
        arch = planner.resolve_architecture(spec, spec_dir)
    except planner.ArchitectureUnknown as exc:
        return None, [error(("backend",), f"backend auto chooses from the memory plan, but {exc.message}",
                            "auto_needs_architecture", exc.hint)]
    _, plans = planner.choose_backend(spec, arch)
    refused = []
    for plan in plans:
        if not plan.fits:
            continue
        problems = [d for d in _rules_for(spec, plan.backend) if d.is_error]
        if not problems:
            return plan.backend, []
        refused.append(f"{plan.backend} fits but: {'; '.join(d.message for d in problems)}")
    if not refused:
        return None, planner.budget_diagnostics(spec, spec_dir)
    return None, [Diagnostic("error", ("backend",), "no backend both fits the budget and accepts this spec",
                             "auto_nothing_accepts", "name a backend and fix what it reports",
                             notes=tuple(refused))]


def cross_field_diagnostics(spec: Spec, spec_dir: Path, memory_check: bool = True) -> list[Diagnostic]:
    """Rules across sections, the backend's own checks, and (from the planner) architecture and budget.
    For `auto` the rules of the backend it would choose apply."""
    from qcompile.compiler import planner

    out = _precision_rules(spec) + _data_rule(spec, spec_dir)
    out += planner.architecture_diagnostics(spec, spec_dir)
    if spec.backend.kind == "auto":
        kind, problems = resolve_auto(spec, spec_dir)
        return out + problems + (_rules_for(spec, kind) if kind else [])
    out += _rules_for(spec, spec.backend.kind)
    if memory_check and not any(d.is_error for d in out):
        out += planner.budget_diagnostics(spec, spec_dir)
    return out
