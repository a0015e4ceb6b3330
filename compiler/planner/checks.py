"""What validate, --emit and run report from the planner.

- architecture_diagnostics(spec, spec_dir or Architecture): lora.layers indices beyond the model's
  layer count (path ("lora", "layers", i)) and target modules the architecture lacks (path
  ("lora", "target_modules", i)); [] when the architecture cannot be resolved.
- budget_diagnostics(spec, spec_dir): one error when the memory plan does not fit (the loader calls it
  after architecture_diagnostics, only when nothing else is wrong, and not with --no-memory-check): path ("hardware",) for a named backend, ("backend",) for `auto` when no backend fits;
  the message carries the numbers, the notes each reason, the hint the smallest fixes that would fit.
  When the architecture cannot be resolved it returns [] and says nothing about the budget (planning is
  then impossible, not wrong); `qcompile plan` reports ArchitectureUnknown itself.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from qcompile.compiler.diagnostics import Diagnostic, error

from .architecture import Architecture, ArchitectureUnknown
from .placements import PLACEMENTS
from .plan import choose_backend, plan, suggest_fixes
from .resolve import resolve_architecture


def architecture_diagnostics(spec, where: Path | Architecture) -> list[Diagnostic]:
    if isinstance(where, Architecture):
        arch = where
    else:
        try:
            arch = resolve_architecture(spec, Path(where))
        except ArchitectureUnknown:
            return []
    out = []
    for index, layer in enumerate(spec.lora.layers or []):
        if not 0 <= layer < arch.num_layers:
            out.append(error(
                ("lora", "layers", index),
                f"layer {layer} does not exist: the model has {arch.num_layers} layers (0..{arch.num_layers - 1})",
                "layer-out-of-range",
            ))
    modules = list(arch.linear_modules())
    for index, name in enumerate(spec.lora.target_modules):
        if name not in modules:
            close = difflib.get_close_matches(name, modules, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"this architecture has {', '.join(modules)}"
            out.append(error(
                ("lora", "target_modules", index),
                f"the {arch.model_type} architecture has no module {name!r} to adapt",
                "unknown-target-module",
                hint,
            ))
    return out


def _fix_hint(spec, arch: Architecture, kind: str) -> str:
    fixes = suggest_fixes(spec, arch, kind)
    if not fixes:
        return "no single change fits; try several (more devices, offload, shorter sequences) with `qcompile plan --backend all`"
    return "would fit: " + "; ".join(f.text() for f in fixes)


def budget_diagnostics(spec, spec_dir: Path) -> list[Diagnostic]:
    try:
        arch = resolve_architecture(spec, Path(spec_dir))
    except ArchitectureUnknown:
        return []
    out: list[Diagnostic] = []
    kind = spec.backend.kind
    if kind == "auto":
        chosen, plans = choose_backend(spec, arch)
        if chosen is None:
            notes = tuple(f"{p.backend}: {'; '.join(p.reasons)}" for p in plans)
            fastest = plans[0].backend if plans else "deepspeed-zero2"
            out.append(Diagnostic(
                "error", ("backend",), "no backend fits the memory budget", "memory-budget",
                _fix_hint(spec, arch, fastest), notes=notes,
            ))
        return out
    if kind not in PLACEMENTS:
        return out
    result = plan(spec, arch, kind)
    if not result.fits:
        peak = result.peak_device
        from qcompile.schemas.units import format_bytes

        out.append(Diagnostic(
            "error", ("hardware",),
            f"the {kind} memory plan does not fit: peak {format_bytes(peak.peak)} on {peak.name} "
            f"(budget {format_bytes(peak.budget)}), host at load {format_bytes(result.host.load_peak)} "
            f"(budget {format_bytes(result.host.budget)})",
            "memory-budget", _fix_hint(spec, arch, kind), notes=tuple(result.reasons),
        ))
    return out
