"""max_seq_length: tokens per sample, longer samples truncated; activations and logits scale with it."""

from __future__ import annotations

from pydantic import Field

from .base import PlainStrategy

SHORTEST_SUGGESTED = 256


class MaxSeqLength(PlainStrategy):
    name = "max_seq_length"
    field = (int, Field(2048, gt=0, le=2**24, description="Tokens per sample; longer samples are truncated."))

    def step_shape(self, spec) -> dict:
        return {"seq": spec.strategies.max_seq_length}

    def fixes(self, spec, backend) -> list:
        seq = spec.strategies.max_seq_length
        return [(f"strategies.max_seq_length: {n}", {"strategies.max_seq_length": n})
                for n in (seq // 2, seq // 4) if n >= SHORTEST_SUGGESTED]


STRATEGY = MaxSeqLength()
