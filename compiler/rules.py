"""Cross-field rules that real runs only trip over hours in, checked at compile time instead.

What a backend accepts is its own `accepts`; what a strategy needs is the strategy's own `check`.
This module applies them to a spec narrowed to one backend, plus the rules that belong to no one
backend or strategy (the batch arithmetic, the data path)."""

from __future__ import annotations

from pathlib import Path

from qcompile.backends.base import Backend
from qcompile.backends.registry import by_speed
from qcompile.schemas.spec import Spec
from qcompile.strategies import STRATEGIES

from .data_checks import data_diagnostics
from .diagnostics import Diagnostic, error
from .output_rules import output_diagnostics


def _placement_rules(spec: Spec, backend: Backend) -> list[Diagnostic]:
    out = []
    if spec.model.device_map is not None and not backend.accepts.layer_placement:
        able = " / ".join(b.kind for b in by_speed() if b.accepts.layer_placement)
        out.append(error(("model", "device_map"), f"{backend.kind} shards the model itself; device_map places whole "
                         "layers on devices and cannot be combined with it", "device_map_unsupported",
                         f"remove model.device_map, or use {able}"))
    if spec.hardware.nodes > 1 and not backend.accepts.multi_node:
        able = " or ".join(b.kind for b in by_speed() if b.accepts.multi_node)
        out.append(error(("hardware", "nodes"), f"{backend.kind} trains one process on one node", "single_node",
                         f"set hardware.nodes: 1, or use {able} for data parallelism across nodes"))
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


def backend_rules(spec: Spec, backend: Backend) -> list[Diagnostic]:
    """Everything `backend` says about `spec` (a spec narrowed to it): accepts, strategies, own check."""
    out = _placement_rules(spec, backend)
    for strategy in STRATEGIES:
        out += strategy.check(spec, backend)
    return out + backend.check(spec) + _batch_rule(spec, backend.data_parallel_size(spec))


def accepts(spec: Spec, backend: Backend) -> list[Diagnostic]:
    """The errors among backend_rules: empty when `backend` can run `spec`."""
    return [d for d in backend_rules(spec, backend) if d.is_error]


def input_rules(spec: Spec, spec_dir: Path) -> list[Diagnostic]:
    """The files a spec names, checked before anything starts: the data file and where the run writes."""
    return data_diagnostics(spec, spec_dir) + output_diagnostics(spec, spec_dir)
