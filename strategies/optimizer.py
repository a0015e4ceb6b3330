"""training.optimizer: AdamW with fp32 states (torch's fused kernel), or bitsandbytes' 8-bit AdamW, plain
or paged (states in CUDA unified memory that pages to host RAM under pressure). 8-bit states are 2 bytes
per trainable parameter instead of 8, except for tensors below bitsandbytes' min_8bit_size (4096
elements), which keep 32-bit states (planner.memory counts both). With DeepSpeed's optimizer offload the
Trainer's 8-bit AdamW runs on the offloaded fp32 partition on the CPU (ds_config keeps
zero_force_ds_cpu_optimizer off): measured, 2 CPU ranks under ZeRO-2, its saved states are uint8."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from qcompile.backends.registry import by_speed
from qcompile.compiler.diagnostics import error

from .base import PlainStrategy

PATH = ("training", "optimizer")
TRAINER_OPTIM = {"adamw": "adamw_torch_fused", "adamw_8bit": "adamw_bnb_8bit", "paged_adamw_8bit": "paged_adamw_8bit"}


class Optimizer(PlainStrategy):
    name = "optimizer"
    section = "training"
    field = (Literal["adamw", "adamw_8bit", "paged_adamw_8bit"], Field(
        "adamw", description="adamw (fp32 states), adamw_8bit (bitsandbytes 8-bit states: 2 instead of 8 bytes "
        "per trainable parameter) or paged_adamw_8bit (the same, paged to host RAM under GPU memory pressure).",
    ))

    def check(self, spec, backend) -> list:
        optim, out = spec.training.optimizer, []
        if optim == "adamw":
            return out
        if not backend.accepts.optimizer_8bit:
            able = [b.kind for b in by_speed() if b.accepts.optimizer_8bit]
            out.append(error(PATH, f"{backend.kind} cannot run bitsandbytes' 8-bit AdamW", "optimizer_unsupported",
                             f"use backend {' or '.join(able)}, or training.optimizer: adamw"))
        if optim == "paged_adamw_8bit" and not backend.accepts.paged_optimizer:
            able = [b.kind for b in by_speed() if b.accepts.paged_optimizer]
            out.append(error(PATH, f"{backend.kind} cannot page optimizer states", "optimizer_unsupported",
                             f"use training.optimizer: adamw_8bit, or backend {' or '.join(able)}"))
        return out

    def fixes(self, spec, backend) -> list:
        if spec.training.optimizer != "adamw" or not backend.accepts.optimizer_8bit:
            return []
        if spec.strategies.offload.optimizer == "cpu":
            return []
        return [("training.optimizer: adamw_8bit", {"training.optimizer": "adamw_8bit"})]

    def train_config(self, spec) -> dict:
        return {"training": {"optim": TRAINER_OPTIM[spec.training.optimizer]}}


STRATEGY = Optimizer()
