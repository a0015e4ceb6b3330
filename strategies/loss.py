"""loss: the cross-entropy over the vocabulary, in one piece (standard: the [tokens, vocab] fp32 logits and
their gradient live at once) or chunk by chunk (chunked: loss_chunk_size tokens at a time, each chunk's
gradient taken as it is computed, so only one chunk's logits exist). On CUDA the job uses liger-kernel's
fused linear cross-entropy when it is installed and the head's weight is on the hidden states' device;
the torch path otherwise (templates/script/chunked_loss.py). The plan counts the larger of the two."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from qcompile.backends.registry import by_speed
from qcompile.compiler.diagnostics import error

from .base import PlainStrategy

PATH = ("strategies", "loss")
DEFAULT_CHUNK = 1024  # tokens: 12 x 1024 x 151,936 bytes = 1.7 GiB of logits for Qwen's vocabulary


class Loss(PlainStrategy):
    name = "loss"
    field = (Literal["standard", "chunked"], Field(
        "standard", description="standard: the full [tokens, vocab] fp32 logits; chunked: the cross-entropy "
        "loss_chunk_size tokens at a time, without materialising the full logits or their gradient."))
    script_parts = ("chunked_loss",)
    # step time / standard step time, bench/strategy_cost.py on the compute-bound shape (CPU, loaded machine;
    # the order chunked loss < offload < int8 held in both runs, the ratios did not)
    speed_cost = 0.72

    def fields(self) -> dict:
        return {self.name: self.field, "loss_chunk_size": (int, Field(
            DEFAULT_CHUNK, ge=16, le=2**20,
            description="Tokens per chunk of strategies.loss: chunked (more: faster, more memory)."))}

    def parts(self, spec) -> tuple[str, ...]:
        return self.script_parts if spec.strategies.loss == "chunked" else ()

    def check(self, spec, backend) -> list:
        if spec.strategies.loss != "chunked" or backend.accepts.chunked_loss:
            return []
        able = [b.kind for b in by_speed() if b.accepts.chunked_loss]
        return [error(PATH, f"{backend.kind} partitions the head's weight, and the chunked loss calls the head "
                      "once per chunk inside its own gradient", "loss_unsupported",
                      f"use backend {' or '.join(able)}, or strategies.loss: standard")]

    def step_shape(self, spec) -> dict:
        if spec.strategies.loss == "standard":
            return {}
        return {"loss_chunk": spec.strategies.loss_chunk_size, "fused_loss": spec.hardware.accelerator == "cuda"}

    def fixes(self, spec, backend) -> list:
        if spec.strategies.loss == "chunked" or (backend is not None and not backend.accepts.chunked_loss):
            return []
        return [("strategies.loss: chunked", {"strategies.loss": "chunked"})]

    def train_config(self, spec) -> dict:
        s = spec.strategies
        return {"strategies": {"loss": s.loss, "loss_chunk_size": s.loss_chunk_size}}


STRATEGY = Loss()
