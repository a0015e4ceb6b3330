"""Everything validate, --emit and run report about a loaded spec, in one pass over its compile context:
the data path, the architecture, the backend's and strategies' rules, `auto`'s choice, the budget."""

from __future__ import annotations

from qcompile.backends.registry import get_backend
from qcompile.schemas.units import format_bytes

from .choose import choose_backend, choose_with_levers, suggest_fixes
from .context import CompileContext
from .diagnostics import Diagnostic, error, warning
from .planner.architecture import ArchitectureInvalid
from .planner.checks import architecture_diagnostics
from .rules import backend_rules, input_rules

NO_FIX = ("no single change fits; try several (more devices, offload, shorter sequences) with "
          "`qcompile plan --backend all`")


def _fix_hint(ctx: CompileContext, backend) -> str:
    fixes = suggest_fixes(ctx, backend)
    return "would fit: " + "; ".join(f.text() for f in fixes) if fixes else NO_FIX


def _architecture_problem(ctx: CompileContext, memory_check: bool) -> list[Diagnostic]:
    """A config.json no model can have is the user's error; an unknown architecture only means the
    memory check is skipped, which is said every time."""
    problem, model = ctx.arch_problem, ctx.spec.model
    if isinstance(problem, ArchitectureInvalid):
        where = ("model", "config") if model.config else ("model", "name")
        return [error(where, problem.message, "config_invalid", problem.hint)]
    if memory_check:
        return [warning(("model",), f"memory not checked: {problem.message}", "memory_not_checked", problem.hint)]
    return []


def _auto(ctx: CompileContext) -> tuple[list[Diagnostic], CompileContext | None]:
    """`backend: auto`: the fastest backend whose plan fits the budget and whose rules accept the spec."""
    if ctx.arch is None:
        problem = ctx.arch_problem
        return [error(("backend",), f"backend auto chooses from the memory plan, but {problem.message}",
                      "auto_needs_architecture", problem.hint)], None
    chosen, considered = choose_backend(ctx)
    with_levers = choose_with_levers(ctx, chosen)  # the activation/logits strategies, cheapest first
    if with_levers is not None:
        faster, narrowed, changes = with_levers
        said = warning(("backend",), f"auto chose {faster.kind} with {', '.join(changes)}"
                       + (f" (faster than {chosen.kind} without)" if chosen else ": nothing fits without"),
                       "auto_strategies", "set these in the spec to keep them, or name a backend")
        return [said, *backend_rules(narrowed.spec, faster)], narrowed
    if chosen is not None:
        narrowed = ctx.for_backend(chosen)
        return backend_rules(narrowed.spec, chosen), narrowed
    notes = tuple(f"{c.backend.kind}{'' if c.refused else ':'} {c.why_not()}" for c in considered)
    if any(c.plan.fits for c in considered):
        return [Diagnostic("error", ("backend",), "no backend both fits the budget and accepts this spec",
                           "auto_nothing_accepts", "name a backend and fix what it reports", notes=notes)], None
    fastest = next((c.backend for c in considered if not c.refused), considered[0].backend)
    return [Diagnostic("error", ("backend",), "no backend fits the memory budget", "memory_budget",
                       _fix_hint(ctx, fastest), notes=notes)], None


def budget_diagnostics(ctx: CompileContext) -> list[Diagnostic]:
    """One error when the narrowed backend's plan does not fit, with its numbers and the smallest fixes."""
    result = ctx.plan
    if result is None or result.fits:
        return []
    peak = result.peak_device
    return [Diagnostic(
        "error", ("hardware",),
        f"the {result.backend} memory plan does not fit: peak {format_bytes(peak.peak)} on {peak.name} "
        f"(budget {format_bytes(peak.budget)}), host at load {format_bytes(result.host.load_peak)} "
        f"(budget {format_bytes(result.host.budget)})",
        "memory_budget", _fix_hint(ctx, ctx.backend), notes=tuple(result.reasons),
    )]


def diagnose(ctx: CompileContext, memory_check: bool = True) -> tuple[list[Diagnostic], CompileContext | None]:
    """Every diagnostic, and the context narrowed to the backend that will run (None when there is none).
    For `auto` the rules of the backend it chooses apply."""
    if ctx.arch is not None:
        out = architecture_diagnostics(ctx.spec, ctx.arch)
    else:
        out = _architecture_problem(ctx, memory_check)
    if ctx.spec.backend.kind == "auto":
        problems, narrowed = _auto(ctx)
        out += problems
    else:
        backend = get_backend(ctx.spec.backend.kind)
        narrowed = ctx.for_backend(backend)
        out += backend_rules(narrowed.spec, backend)
    out += input_rules((narrowed or ctx).spec, ctx.spec_dir)
    if narrowed is not None and memory_check and ctx.spec.backend.kind != "auto" and not any(d.is_error for d in out):
        out += budget_diagnostics(narrowed)
    return out, narrowed
