"""activation_compression: tensors the decoder saves for backward are stored as int8 or fp8 (e4m3) with
one fp32 scale per row of their last dimension, and restored to their dtype when backward needs them
(templates/script/saved_activations.py). Lossy: the gradients differ from the uncompressed step (see
bench/strategy_cost.py for the measured error). The head and the loss are left exact; with checkpointing
the compressed tensors are the layer inputs the checkpoint keeps, the recompute itself is full precision."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import PlainStrategy

COMPRESSED_BYTES = {"int8": 1, "fp8": 1}


class ActivationCompression(PlainStrategy):
    name = "activation_compression"
    field = (Literal["none", "fp8", "int8"], Field(
        "none", description="Store the decoder's saved activations as int8 or fp8 with a per-row scale (lossy)."))
    script_parts = ("saved_activations",)
    # step time / standard step time, bench/strategy_cost.py on the compute-bound shape (CPU, loaded machine;
    # the order chunked loss < offload < int8 held in both runs, the ratios did not)
    speed_cost = 1.04

    def parts(self, spec) -> tuple[str, ...]:
        return self.script_parts if spec.strategies.activation_compression != "none" else ()

    def step_shape(self, spec) -> dict:
        kind = spec.strategies.activation_compression
        return {} if kind == "none" else {"compressed_bytes": COMPRESSED_BYTES[kind]}

    def fixes(self, spec, backend) -> list:
        if spec.strategies.activation_compression != "none":
            return []
        return [("strategies.activation_compression: int8", {"strategies.activation_compression": "int8"})]


STRATEGY = ActivationCompression()
