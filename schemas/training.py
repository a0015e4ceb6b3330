"""`training:` the optimisation loop."""

from typing import Literal

from pydantic import Field

from ._base import Section


class TrainingSpec(Section):
    micro_batch_size: int = Field(1, ge=1, description="Samples per device per forward pass.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches summed before each optimizer step.")
    global_batch_size: int | None = Field(
        None,
        ge=1,
        description="Optional check: must equal micro_batch_size x gradient_accumulation_steps x data-parallel ranks.",
    )
    epochs: int = Field(1, ge=1, description="Passes over the data (max_steps wins when set).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    learning_rate: float = Field(2.0e-4, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field("linear", description="Learning-rate schedule.")
    seed: int = Field(42, ge=0, description="Seed for torch, Python and data order on every rank.")
    output_dir: str = Field(min_length=1, description="Where checkpoints, metrics and the final adapter go.")
    save_steps: int = Field(100, ge=1, description="Save a resumable checkpoint every this many steps.")
    logging_steps: int = Field(10, ge=1, description="Log loss and throughput every this many steps.")
