"""offload: frozen base weights on CPU or disk, LoRA optimizer states on CPU. Which places a backend
can use is the backend's own `accepts`; the memory effect is in each backend's placement."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from qcompile.backends.registry import by_speed
from qcompile.compiler.diagnostics import error
from qcompile.schemas._base import Section

from .base import PlainStrategy


class OffloadSpec(Section):
    optimizer: Literal["none", "cpu"] = Field("none", description="Where LoRA optimizer states live.")
    params: Literal["none", "cpu", "disk"] | None = Field(
        None, description="Where frozen base weights that do not fit on the device live: none (they must fit), "
        "cpu or disk. null lets the backend decide: a backend that offloads by design spills to CPU, the others "
        "keep the weights on the device.",
    )


class Offload(PlainStrategy):
    name = "offload"
    field = (OffloadSpec, Field(default_factory=OffloadSpec, description="CPU or disk offload."))

    def check(self, spec, backend) -> list:
        out, offload = [], spec.strategies.offload
        if offload.params != "none" and offload.params not in backend.accepts.param_offload:
            able = [b.kind for b in by_speed() if offload.params in b.accepts.param_offload]
            out.append(error(("strategies", "offload", "params"),
                             f"{backend.kind} cannot offload parameters to {offload.params}", "offload_unsupported",
                             f"use backend {' or '.join(able)}, or offload.params: none"))
        if offload.optimizer != "none" and not backend.accepts.optimizer_offload:
            able = [b.kind for b in by_speed() if b.accepts.optimizer_offload]
            out.append(error(("strategies", "offload", "optimizer"),
                             f"{backend.kind} keeps LoRA optimizer states with their parameters; optimizer offload "
                             "is a DeepSpeed feature", "offload_unsupported",
                             f"use backend {' or '.join(able)}, or offload.optimizer: none"))
        return out

    def for_backend(self, spec, backend):
        """null params become the backend's own choice, so everything downstream sees a place."""
        offload = spec.strategies.offload
        if offload.params is not None:
            return spec
        offload = offload.model_copy(update={"params": backend.default_param_offload(spec)})
        return spec.model_copy(update={"strategies": spec.strategies.model_copy(update={"offload": offload})})

    def fixes(self, spec, backend) -> list:
        out = []
        if spec.strategies.offload.optimizer == "none" and backend.accepts.optimizer_offload:
            out.append(("strategies.offload.optimizer: cpu", {"strategies.offload.optimizer": "cpu"}))
        if spec.strategies.offload.params == "cpu" and "disk" in backend.accepts.param_offload:
            out.append(("strategies.offload.params: disk", {"strategies.offload.params": "disk"}))
        return out

    def train_config(self, spec) -> dict:
        offload = spec.strategies.offload
        return {"strategies": {"offload": {"optimizer": offload.optimizer, "params": offload.params}}}


STRATEGY = Offload()
