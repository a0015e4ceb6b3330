"""`lora:` the adapters peft injects."""

from typing import Annotated

from pydantic import Field

from ._base import Section

MAX_LAYERS = 1024  # decoder layers; the largest real models have about 130


class LoraSpec(Section):
    r: int = Field(16, gt=0, le=65_536, description="Rank of each adapter's A and B matrices.")
    alpha: float = Field(32, gt=0, le=1_000_000, description="Scaling numerator: the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input, in [0, 1).")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        max_length=64,
        description="Names of the Linear modules that get adapters (e.g. q_proj, gate_proj).",
    )
    layers: list[Annotated[int, Field(ge=0, le=MAX_LAYERS)]] | None = Field(
        None,
        min_length=1,
        max_length=MAX_LAYERS,
        description="Decoder layer indices that get adapters (selective adapters); null = every layer.",
    )
