"""`strategies:` the memory strategies of the seed article."""

from typing import Literal

from pydantic import Field, field_validator

from ._base import Section


class OffloadSpec(Section):
    optimizer: Literal["none", "cpu"] = Field("none", description="Where LoRA optimizer states live.")
    params: Literal["none", "cpu", "disk"] = Field(
        "none", description="Where frozen base weights that do not fit on the device live."
    )


class StrategiesSpec(Section):
    gradient_checkpointing: bool = Field(
        True, description="Recompute each layer in backward instead of keeping its activations."
    )
    mixed_precision: Literal["no", "fp16", "bf16"] = Field(
        "bf16", description='Autocast compute dtype: "no", fp16 or bf16 (quote "no": YAML reads no as false).'
    )
    low_cpu_mem_usage: bool = Field(
        True,
        description="Keep host RAM at load near one copy per node: transformers 5 builds the model on the "
        "meta device and memory-maps safetensors (ranks share the page cache); with this on, the ranks of a "
        "node also load one after another so their transient peaks do not add up (ZeRO-3 instead "
        "partitions while loading). Off, the planner counts a private copy per rank.",
    )
    max_seq_length: int = Field(
        2048, gt=0, le=2**24, description="Tokens per sample; longer samples are truncated."
    )
    attention: Literal["sdpa", "eager"] = Field("sdpa", description="Attention implementation.")
    offload: OffloadSpec = Field(default_factory=OffloadSpec, description="CPU or disk offload.")

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: object) -> object:
        # YAML 1.1 reads a bare `no` as false; that is what the user meant.
        return "no" if value is False else value
