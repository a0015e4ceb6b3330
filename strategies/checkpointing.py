"""gradient_checkpointing: recompute each decoder layer in backward instead of keeping its activations
(non-reentrant, as the generated script sets it); the plan then keeps one input per layer."""

from __future__ import annotations

from pydantic import Field

from .base import PlainStrategy


class GradientCheckpointing(PlainStrategy):
    name = "gradient_checkpointing"
    field = (bool, Field(True, description="Recompute each layer in backward instead of keeping its activations."))

    def step_shape(self, spec) -> dict:
        return {"checkpointing": spec.strategies.gradient_checkpointing}

    def fixes(self, spec, backend) -> list:
        if spec.strategies.gradient_checkpointing:
            return []
        return [("strategies.gradient_checkpointing: true", {"strategies.gradient_checkpointing": True})]


STRATEGY = GradientCheckpointing()
