"""The plan for one backend: does the spec fit its hardware budget, and if not, why."""

from __future__ import annotations

from dataclasses import dataclass, field

from qcompile.schemas.backend import with_backend
from qcompile.schemas.units import format_bytes
from qcompile.strategies import STRATEGIES

from . import saved as act_saved
from .architecture import Architecture
from .memory import Context, DeviceUse, HostUse
from .render import plan_markdown, plan_text


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
        return plan_markdown(self)

    def to_text(self) -> str:
        return plan_text(self)


def _reasons(spec, backend, devices: list[DeviceUse], host: HostUse) -> list[str]:
    reasons = []
    worst = max(devices, key=lambda d: d.peak)
    if worst.peak > worst.budget:
        over = [d for d in devices if d.peak > d.budget]
        where = worst.name if len(over) == 1 else f"{len(over)} devices (worst: {worst.name})"
        weights = worst.breakdown["weights"]
        why = backend.overflow_reason(spec, worst)
        if why is None and weights > worst.budget:
            why = f"its share of the weights alone is {format_bytes(weights)}"
        elif why is None:
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


def memory_context(spec, arch: Architecture) -> Context:
    """What the backends' placements read: the spec, the architecture and the strategies' step shape."""
    step = {}
    for strategy in STRATEGIES:
        step.update(strategy.step_shape(spec))
    return Context(spec, arch, step)


def plan(spec, arch: Architecture, backend, step: dict | None = None) -> Plan:
    """The memory plan of `spec` under `backend` (a backend object), with the spec's options for it.
    `step`: StepShape fields set over the strategies' (the tracer plans a CPU trace that offloads
    activations as a CUDA job does)."""
    spec = with_backend(spec, backend.kind)
    ctx = memory_context(spec, arch)
    ctx.step.update(step or {})
    devices, host = backend.placement(ctx)
    offloaded, why = act_saved.host_bytes(ctx, backend)  # act: activation offload
    if offloaded:
        host.train_peak += offloaded
        host.notes.append(why)
    summary = {
        "source": arch.source,
        "num_params": arch.num_params(),
        "lora_params": ctx.lora_params,
        "num_layers": arch.num_layers,
        "hidden_size": arch.hidden_size,
        "vocab_size": arch.vocab_size,
    }
    return Plan(backend.kind, devices, host, _reasons(spec, backend, devices, host), list(host.notes), summary)
