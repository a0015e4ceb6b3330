"""The plan for one backend: does the spec fit its hardware budget, and if not, why and what would."""

from __future__ import annotations

from dataclasses import dataclass, field

from qcompile.schemas.units import format_bytes

from .architecture import Architecture
from .placements import PLACEMENTS, SPEED_ORDER, Context, DeviceUse, HostUse, naive_layout


@dataclass
class Plan:
    backend: str
    devices: list[DeviceUse]
    host: HostUse
    reasons: list[str] = field(default_factory=list)  # why it does not fit; empty when it does
    notes: list[str] = field(default_factory=list)
    architecture: dict = field(default_factory=dict)

    @property
    def fits(self) -> bool:
        return not self.reasons

    @property
    def peak_device(self) -> DeviceUse:
        return max(self.devices, key=lambda d: d.peak)

    def to_json(self) -> dict:
        return {
            "backend": self.backend,
            "fits": self.fits,
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "architecture": dict(self.architecture),
            "devices": [
                {
                    "name": d.name,
                    "peak_bytes": d.peak,
                    "tensor_bytes": d.tensor_bytes,
                    "budget_bytes": d.budget,
                    "headroom_bytes": d.budget - d.peak,
                    "breakdown": dict(sorted(d.breakdown.items())),
                    "note": d.note,
                }
                for d in self.devices
            ],
            "host": {
                "load_peak_bytes": self.host.load_peak,
                "train_peak_bytes": self.host.train_peak,
                "budget_bytes": self.host.budget,
                "disk_bytes": self.host.disk,
                "notes": list(self.host.notes),
            },
        }

    def to_markdown(self) -> str:
        from .render import plan_markdown

        return plan_markdown(self)

    def to_text(self) -> str:
        from .render import plan_text

        return plan_text(self)


def _reasons(spec, kind: str, devices: list[DeviceUse], host: HostUse) -> list[str]:
    reasons = []
    worst = max(devices, key=lambda d: d.peak)
    if worst.peak > worst.budget:
        over = [d for d in devices if d.peak > d.budget]
        where = worst.name if len(over) == 1 else f"{len(over)} devices (worst: {worst.name})"
        weights = worst.breakdown["weights"]
        if weights > worst.budget and kind == "deepspeed-zero2":
            why = (f"ZeRO-2 replicates the frozen weights on every GPU: {format_bytes(weights)} of "
                   f"{spec.model.dtype} weights per GPU cannot fit {format_bytes(worst.budget)}")
        elif weights > worst.budget:
            why = f"its share of the weights alone is {format_bytes(weights)}"
        else:
            top = max(("weights", "lora_states", "activations", "logits"), key=lambda k: worst.breakdown[k])
            why = f"largest part: {top} {format_bytes(worst.breakdown[top])}"
        reasons.append(
            f"{where} needs {format_bytes(worst.peak)} but has {format_bytes(worst.budget)} "
            f"(hardware.device_memory): {why}"
        )
    if host.load_peak > host.budget:
        reasons.append(
            f"host RAM at load: {format_bytes(host.load_peak)} per node exceeds {format_bytes(host.budget)} "
            f"(hardware.host_memory): {host.notes[0]}"
        )
    if host.train_peak > host.budget:
        reasons.append(
            f"host RAM in training: {format_bytes(host.train_peak)} per node exceeds "
            f"{format_bytes(host.budget)} (hardware.host_memory)"
        )
    disk = spec.hardware.disk
    if disk is not None and host.disk > disk:
        reasons.append(f"disk: {format_bytes(host.disk)} needed, {format_bytes(disk)} free (hardware.disk)")
    return reasons


def plan(spec, arch: Architecture, backend_kind: str) -> Plan:
    """The memory plan of `spec` under `backend_kind` (any kind in PLACEMENTS; not "auto")."""
    if backend_kind not in PLACEMENTS:
        raise ValueError(f"no memory model for backend {backend_kind!r}; known: {', '.join(PLACEMENTS)}")
    devices, host = PLACEMENTS[backend_kind](Context(spec, arch))
    summary = {
        "source": arch.source,
        "num_params": arch.num_params(),
        "lora_params": Context(spec, arch).lora_params,
        "num_layers": arch.num_layers,
        "hidden_size": arch.hidden_size,
        "vocab_size": arch.vocab_size,
    }
    return Plan(backend_kind, devices, host, _reasons(spec, backend_kind, devices, host), list(host.notes), summary)


def candidate_kinds() -> list[str]:
    """Backends `auto` may pick: those the spec language accepts and the planner models, fastest first."""
    from qcompile.schemas import BACKEND_KINDS

    return [k for k in SPEED_ORDER if k in BACKEND_KINDS]


def choose_backend(spec, arch: Architecture) -> tuple[str | None, list[Plan]]:
    """The fastest backend whose plan fits (None when none does), and every plan considered, in the
    order considered: each rejected plan carries its reasons."""
    plans = [plan(spec, arch, kind) for kind in candidate_kinds()]
    chosen = next((p.backend for p in plans if p.fits), None)
    return chosen, plans


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


def _candidate_changes(spec, arch: Architecture, kind: str) -> list[tuple[str, list[tuple[str, object]], str]]:
    """(description, [(field, value)], backend) for each single change worth trying, smallest first."""
    s, out = spec.strategies, []
    if spec.model.dtype == "float32":
        out.append(("model.dtype: bfloat16", [("model.dtype", "bfloat16")], kind))
    if not s.low_cpu_mem_usage:
        out.append(("strategies.low_cpu_mem_usage: true", [("strategies.low_cpu_mem_usage", True)], kind))
    if not s.gradient_checkpointing:
        out.append(("strategies.gradient_checkpointing: true", [("strategies.gradient_checkpointing", True)], kind))
    if spec.training.micro_batch_size > 1:
        out.append(("training.micro_batch_size: 1", [("training.micro_batch_size", 1)], kind))
    for seq in (s.max_seq_length // 2, s.max_seq_length // 4):
        if seq >= 256:
            out.append((f"strategies.max_seq_length: {seq}", [("strategies.max_seq_length", seq)], kind))
    if s.offload.optimizer == "none" and kind.startswith("deepspeed"):
        out.append(("strategies.offload.optimizer: cpu", [("strategies.offload.optimizer", "cpu")], kind))
    smaller = [m for m in ("q_proj", "v_proj") if m in spec.lora.target_modules]
    if smaller and len(smaller) < len(spec.lora.target_modules):
        out.append((f"lora.target_modules: [{', '.join(smaller)}]", [("lora.target_modules", smaller)], kind))
    for other in candidate_kinds():
        if other != kind:
            out.append((f"backend: {other}", [("backend", _backend_value(other))], other))
    if "accelerate-offload" in candidate_kinds() and s.offload.params == "none":
        out.append(("backend: accelerate-offload with strategies.offload.params: cpu",
                    [("backend", _backend_value("accelerate-offload")), ("strategies.offload.params", "cpu")],
                    "accelerate-offload"))
    hw = spec.hardware
    out.append((f"hardware.devices_per_node: {hw.devices_per_node * 2}",
                [("hardware.devices_per_node", hw.devices_per_node * 2)], kind))
    out.append((f"hardware.nodes: {hw.nodes * 2}", [("hardware.nodes", hw.nodes * 2)], kind))
    return out


def _backend_value(kind: str):
    from pydantic import TypeAdapter

    from qcompile.schemas.backend import BackendSpec

    return TypeAdapter(BackendSpec).validate_python({"kind": kind})


def suggest_fixes(spec, arch: Architecture, kind: str, limit: int = 5) -> list[Fix]:
    """The smallest single changes after which `kind` (or the backend the change names) fits, with
    their predicted peaks; at most `limit`, in the order a user would try them."""
    fixes = []
    for description, changes, new_kind in _candidate_changes(spec, arch, kind):
        changed = spec
        for dotted, value in changes:
            changed = _with(changed, dotted, value)
        result = plan(changed, arch, new_kind)
        if result.fits and not any(f.backend == new_kind and new_kind != kind for f in fixes):
            fixes.append(Fix(description, new_kind, result.peak_device.peak, result.host.load_peak, True))
        if len(fixes) == limit:
            break
    return fixes


def planned_device_map(spec, arch: Architecture) -> dict[str, int | str]:
    """The placement naive-model-parallel's plan is computed for, as the transformers device_map the
    job loads with: one source of truth, so the plan a user reads is what runs. GPUs are ints (all
    resident modules are "cpu" on a CPU node); offloaded layers, norm and head are "cpu" or "disk"."""
    blocks, offload_from = naive_layout(Context(spec, arch))
    cpu_node = spec.hardware.accelerator == "cpu"

    def device(d: int) -> int | str:
        return "cpu" if cpu_node else d

    spill = spec.strategies.offload.params
    device_map: dict[str, int | str] = {"model.embed_tokens": device(0), "model.rotary_emb": device(0)}
    for d, block in enumerate(blocks):
        device_map.update({f"model.layers.{i}": device(d) for i in block})
    device_map.update({f"model.layers.{i}": spill for i in range(offload_from, arch.num_layers)})
    device_map["model.norm"] = spill if offload_from < arch.num_layers else device(len(blocks) - 1)
    device_map["lm_head"] = device(0) if arch.tie_word_embeddings else device_map["model.norm"]
    return device_map
