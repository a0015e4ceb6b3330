"""The memory planner: predicts GPU and host memory per backend from the architecture alone.

Imports no torch (trace.py, the ground-truth tracer, imports it inside its functions). The pipeline:
resolve_architecture (config.json, local dir, HF cache, catalog) -> plan(spec, arch, kind) per backend
(placements.py says where each backend keeps the bytes; activations.py what a step saves) ->
choose_backend for `backend: auto` -> suggest_fixes when nothing fits -> budget_diagnostics for
validate/--emit/run. See checks.py for what budget_diagnostics reports.
"""

from .architecture import Architecture, ArchitectureUnknown
from .checks import architecture_diagnostics, budget_diagnostics
from .plan import Fix, Plan, candidate_kinds, choose_backend, plan, planned_device_map, suggest_fixes
from .resolve import resolve_architecture

__all__ = [
    "Architecture",
    "ArchitectureUnknown",
    "Fix",
    "Plan",
    "architecture_diagnostics",
    "budget_diagnostics",
    "candidate_kinds",
    "choose_backend",
    "plan",
    "planned_device_map",
    "resolve_architecture",
    "suggest_fixes",
]
