"""attention: the attention implementation; eager keeps the b x heads x s x s scores, sdpa does not."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import PlainStrategy


class Attention(PlainStrategy):
    name = "attention"
    field = (Literal["sdpa", "eager"], Field("sdpa", description="Attention implementation."))

    def step_shape(self, spec) -> dict:
        return {"attention": spec.strategies.attention}

    def fixes(self, spec, backend) -> list:
        if spec.strategies.attention == "sdpa":
            return []
        return [("strategies.attention: sdpa", {"strategies.attention": "sdpa"})]

    def train_config(self, spec) -> dict:
        # Read when the model is loaded, with the model section.
        return {"model": {"attention": spec.strategies.attention}}


STRATEGY = Attention()
