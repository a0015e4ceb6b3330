"""The root of a qcompile spec (version 1): one section per schema module."""

from typing import Literal

from pydantic import Field, field_validator

from ._base import Section
from .backend import AutoBackend, BackendSpec, describe_kinds
from .data import DataSpec
from .hardware import HardwareSpec
from .lora import LoraSpec
from .model import ModelSpec
from .strategies import StrategiesSpec
from .training import TrainingSpec


class Spec(Section):
    version: Literal[1] = Field(description="Spec language version; 1 is the only one.")
    model: ModelSpec = Field(description="The model to tune.")
    hardware: HardwareSpec = Field(description="Devices, nodes and their memory budget.")
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA adapter settings.")
    strategies: StrategiesSpec = Field(default_factory=StrategiesSpec, description="Memory strategies.")
    backend: BackendSpec = Field(
        default_factory=lambda: AutoBackend(kind="auto"),
        description=f"{describe_kinds()}, or a mapping {{kind: ..., options}}.",
    )
    data: DataSpec = Field(description="Training data.")
    training: TrainingSpec = Field(description="Optimisation loop.")

    @field_validator("backend", mode="before")
    @classmethod
    def _name_is_kind(cls, value: object) -> object:
        if isinstance(value, str):
            return {"kind": value}
        return value
