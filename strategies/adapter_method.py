"""lora.method: which LoRA variant peft builds. dora adds a trainable magnitude vector per adapted module
(and the weight norm's activations); rslora scales by alpha/sqrt(r) and changes no memory; adalora
starts at rank r, prunes toward an average of target_r by SVD-style importance (its rank allocator
runs every step) and keeps E vectors, importance scores and orthogonality terms (planner.memory)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from qcompile.backends.registry import by_speed
from qcompile.compiler.diagnostics import error
from qcompile.schemas._base import Section

from .base import PlainStrategy

PATH = ("lora", "method")


class AdaLoraSchedule(Section):
    """AdaLoRA's budget schedule in optimizer steps; null values derive from the run length in train.py."""

    tinit: int | None = Field(None, ge=0, description="Steps at full rank before pruning; null: 10% of the run.")
    tfinal: int | None = Field(None, ge=0, description="Steps at the final rank after pruning; null: 20% of the run.")
    delta_t: int | None = Field(None, ge=1, description="Steps between rank reallocations; null: 1/10 of the "
                                "pruning phase, at least 1.")
    orth_reg_weight: float = Field(0.5, ge=0, le=100, description="Weight of the orthogonality regulariser.")


class AdapterMethod(PlainStrategy):
    name = "method"
    section = "lora"
    field = (Literal["lora", "dora", "rslora", "adalora"], Field(
        "lora", description="lora, dora (weight-decomposed: a magnitude vector per module), rslora (alpha/sqrt(r) "
        "scaling) or adalora (rank r pruned toward target_r during training).",
    ))
    script_parts = ("adalora",)

    def fields(self) -> dict:
        return {
            "method": self.field,
            "target_r": (int | None, Field(None, gt=0, le=65_536,
                                           description="adalora only: the final average rank (below lora.r).")),
            "adalora": (AdaLoraSchedule, Field(default_factory=AdaLoraSchedule,
                                               description="adalora only: the rank budget schedule.")),
        }

    def check(self, spec, backend) -> list:
        lora, out = spec.lora, []
        if lora.method != "adalora":
            if lora.target_r is not None:
                out.append(error(("lora", "target_r"), f"target_r is an AdaLoRA setting; lora.method is {lora.method}",
                                 "target_r_without_adalora", "remove lora.target_r, or set lora.method: adalora"))
            if lora.adalora != AdaLoraSchedule():
                out.append(error(("lora", "adalora"), f"the AdaLoRA schedule does not apply to {lora.method}",
                                 "target_r_without_adalora", "remove lora.adalora, or set lora.method: adalora"))
        else:
            out += self._adalora_rules(spec, backend)
        quant = spec.model.quantization
        if lora.method == "dora" and quant is not None and quant.bits == 8:
            out.append(error(PATH, "DoRA on an 8-bit base fails from the second step (bitsandbytes 0.50.2 clears "
                             "the int8 weight's scales when peft dequantises it for the norm)", "method_unsupported",
                             "use model.quantization bits: 4 with DoRA, or lora.method: lora on an 8-bit base"))
        if lora.method == "dora" and not backend.accepts.dora:
            able = [b.kind for b in by_speed() if b.accepts.dora]
            out.append(error(PATH, f"{backend.kind} shards the base weights, and DoRA needs each whole weight for "
                             "its norm", "method_unsupported",
                             f"use backend {' or '.join(able)}, or lora.method: lora"))
        return out

    def _adalora_rules(self, spec, backend) -> list:
        lora, out = spec.lora, []
        if lora.target_r is None:
            out.append(error(("lora", "target_r"), "adalora needs the final average rank", "adalora_target_r",
                             f"set lora.target_r (e.g. {max(lora.r // 2, 1)}) below lora.r"))
        elif lora.target_r > lora.r:
            out.append(error(("lora", "target_r"), f"target_r {lora.target_r} exceeds the initial rank r {lora.r}",
                             "adalora_target_r", "AdaLoRA only prunes: set lora.target_r <= lora.r"))
        if not backend.accepts.adaptive_rank:
            able = [b.kind for b in by_speed() if b.accepts.adaptive_rank]
            out.append(error(PATH, f"{backend.kind} cannot run AdaLoRA: {backend.accepts.adaptive_rank_why}",
                             "method_unsupported", f"use backend {' or '.join(able)}, or lora.method: lora"))
        if spec.strategies.offload.params != "none":
            out.append(error(PATH, "AdaLoRA adapters on offloaded layers are not supported", "method_unsupported",
                             "use strategies.offload.params: none, or lora.method: lora"))
        sched, steps = lora.adalora, spec.training.max_steps
        if steps is not None and (sched.tinit or 0) + (sched.tfinal or 0) >= steps:
            out.append(error(("lora", "adalora"), f"tinit + tfinal must leave pruning steps in a {steps}-step run",
                             "adalora_schedule", "lower lora.adalora.tinit/tfinal, or leave them null"))
        return out

    def parts(self, spec) -> tuple[str, ...]:
        return self.script_parts if spec.lora.method == "adalora" else ()

    def train_config(self, spec) -> dict:
        lora = spec.lora
        schedule = lora.adalora.model_dump() if lora.method == "adalora" else None
        return {"lora": {"method": lora.method, "target_r": lora.target_r, "adalora": schedule}}


STRATEGY = AdapterMethod()
