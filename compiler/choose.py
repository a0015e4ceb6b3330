"""`backend: auto` and the planner's suggestions: both need every backend, its plan and its rules.

choose_backend picks the fastest backend whose plan fits and whose rules accept the spec;
suggest_fixes lists the smallest single changes after which a backend fits, each one a spec that
backend would also accept (a 2-node spec is never told to use a single-node backend)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from qcompile.backends.base import Backend
from qcompile.backends.registry import by_speed
from qcompile.schemas.backend import with_backend
from qcompile.schemas.units import format_bytes
from qcompile.strategies import STRATEGIES

from .context import CompileContext
from .planner.plan import Plan, plan
from .rules import accepts

SMALLER_TARGETS = ("q_proj", "v_proj")


@dataclass(frozen=True)
class Considered:
    backend: Backend
    plan: Plan
    refused: tuple[str, ...]  # why its rules refuse the spec; empty when they accept it

    @property
    def usable(self) -> bool:
        return self.plan.fits and not self.refused

    def why_not(self) -> str:
        if self.refused:
            return ("fits but: " if self.plan.fits else "refuses the spec: ") + "; ".join(self.refused)
        return "; ".join(self.plan.reasons)


def consider(ctx: CompileContext) -> list[Considered]:
    """Every backend's plan and verdict, fastest first (needs the architecture)."""
    out = []
    for backend in by_speed():
        narrowed = ctx.for_backend(backend)
        refused = tuple(d.message for d in accepts(narrowed.spec, backend))
        out.append(Considered(backend, narrowed.plan, refused))
    return out


def choose_backend(ctx: CompileContext) -> tuple[Backend | None, list[Considered]]:
    """The fastest usable backend (None when none is), and every backend considered."""
    considered = consider(ctx)
    return next((c.backend for c in considered if c.usable), None), considered


def by_speed_cost(strategies) -> list:
    """Strategies in the order of their measured slowdown (`speed_cost`, bench/strategy_cost.py); those
    without one cost nothing measurable and keep their registry order."""
    return sorted(strategies, key=lambda s: getattr(s, "speed_cost", 1.0))


def levers(spec) -> list[tuple[str, dict]]:
    """The activation and logits strategies' fixes (those with a measured speed_cost), cheapest first:
    what `auto` may turn on when no backend fits the spec as written."""
    out = []
    for strategy in by_speed_cost(s for s in STRATEGIES if hasattr(s, "speed_cost")):
        out += strategy.fixes(spec, None)
    return out


def choose_with_levers(ctx: CompileContext,
                       as_written: Backend | None) -> tuple[Backend, CompileContext, list[str]] | None:
    """A faster choice than `as_written` (the backend auto picks for the spec as written; None: nothing
    fits): the fewest levers, taken cheapest first and added one at a time, after which a backend faster
    than that one fits and accepts the spec; that backend, the context with the levers set, and their
    descriptions. None when no lever set gives a faster backend."""
    order = [b.kind for b in by_speed()]
    limit = order.index(as_written.kind) if as_written is not None else len(order)
    if limit == 0:
        return None
    spec, chosen = ctx.spec, []
    for description, changes in levers(spec):
        for dotted, value in changes.items():
            spec = _with(spec, dotted, value)
        chosen.append(description)
        changed = replace(ctx, spec=spec, plans={})
        backend, _ = choose_backend(changed)
        if backend is not None and order.index(backend.kind) < limit:
            return backend, changed.for_backend(backend), chosen
    return None


@dataclass(frozen=True)
class Fix:
    change: str  # what to set, e.g. "strategies.max_seq_length: 1024"
    backend: str
    peak_device_bytes: int
    host_load_bytes: int
    fits: bool

    def text(self) -> str:
        via = "" if self.change.startswith("backend:") else f" ({self.backend})"
        return (f"{self.change}{via}: peak {format_bytes(self.peak_device_bytes)} per device, "
                f"host at load {format_bytes(self.host_load_bytes)}")


def _with(spec, dotted: str, value):
    """A copy of the (frozen) spec with one nested field replaced."""
    head, _, rest = dotted.partition(".")
    if not rest:
        return spec.model_copy(update={head: value})
    return spec.model_copy(update={head: _with(getattr(spec, head), rest, value)})


def _changes(spec, backend: Backend) -> list[tuple[str, dict, Backend]]:
    """(description, {dotted key: value}, backend) for each single change worth trying, smallest first."""
    out: list[tuple[str, dict, Backend]] = []
    if spec.model.dtype == "float32":
        out.append(("model.dtype: bfloat16", {"model.dtype": "bfloat16"}, backend))
    for strategy in by_speed_cost(STRATEGIES):
        out += [(text, change, backend) for text, change in strategy.fixes(spec, backend)]
    if spec.training.micro_batch_size > 1:
        out.append(("training.micro_batch_size: 1", {"training.micro_batch_size": 1}, backend))
    smaller = [m for m in SMALLER_TARGETS if m in spec.lora.target_modules]
    if smaller and len(smaller) < len(spec.lora.target_modules):
        out.append((f"lora.target_modules: [{', '.join(smaller)}]", {"lora.target_modules": smaller}, backend))
    others = [b for b in by_speed() if b.kind != backend.kind]
    out += [(f"backend: {b.kind}", {}, b) for b in others]
    if spec.strategies.offload.params in ("none", None):
        out += [(f"backend: {b.kind} with strategies.offload.params: cpu", {"strategies.offload.params": "cpu"}, b)
                for b in by_speed() if "cpu" in b.accepts.param_offload]
    hw = spec.hardware
    out.append((f"hardware.devices_per_node: {hw.devices_per_node * 2}",
                {"hardware.devices_per_node": hw.devices_per_node * 2}, backend))
    out.append((f"hardware.nodes: {hw.nodes * 2}", {"hardware.nodes": hw.nodes * 2}, backend))
    return out


def suggest_fixes(ctx: CompileContext, backend: Backend, limit: int = 5) -> list[Fix]:
    """The smallest single changes after which `backend` (or the backend the change names) fits and
    accepts the spec, with their predicted peaks; at most `limit`, in the order a user would try them."""
    base = ctx.for_backend(backend).spec
    fixes: list[Fix] = []
    for description, changes, target in _changes(base, backend):
        changed = with_backend(base, target.kind)
        for dotted, value in changes.items():
            changed = _with(changed, dotted, value)
        if any(f.backend == target.kind and target is not backend for f in fixes) or accepts(changed, target):
            continue
        result = plan(changed, ctx.arch, target)
        if result.fits:
            fixes.append(Fix(description, target.kind, result.peak_device.peak, result.host.load_peak, True))
        if len(fixes) == limit:
            break
    return fixes
