"""`backend:` which engine trains; a name, or a mapping with `kind` and that engine's options."""

from typing import Annotated, Literal

from pydantic import Field

from ._base import Section

BACKEND_KINDS = ("auto", "deepspeed-zero2", "deepspeed-zero3", "accelerate-offload", "naive-model-parallel")


class AutoBackend(Section):
    kind: Literal["auto"] = Field(description="Pick the fastest backend whose plan fits the budget.")


class Zero2Backend(Section):
    kind: Literal["deepspeed-zero2"] = Field(description="DeepSpeed ZeRO stage 2 data parallelism.")
    overlap_comm: bool = Field(True, description="Overlap gradient reduction with backward.")
    reduce_bucket_size: int = Field(50_000_000, gt=0, description="Elements per gradient-reduction bucket.")
    allgather_bucket_size: int = Field(50_000_000, gt=0, description="Elements per all-gather bucket.")


class Zero3Backend(Section):
    kind: Literal["deepspeed-zero3"] = Field(
        description="DeepSpeed ZeRO stage 3 data parallelism: the frozen weights are sharded too, from load on."
    )
    overlap_comm: bool = Field(True, description="Overlap gradient reduction and parameter gathering with compute.")
    reduce_bucket_size: int | None = Field(
        None, gt=0, description="Elements per gradient-reduction bucket; null: hidden_size squared."
    )
    prefetch_bucket_size: int | None = Field(
        None, gt=0, description="Elements of parameters gathered ahead of use; null: 0.9 x hidden_size squared."
    )
    param_persistence_threshold: int | None = Field(
        None, ge=0, description="Parameters with fewer elements stay whole on every rank; null: 10 x hidden_size."
    )
    max_live_parameters: int = Field(
        1_000_000_000, gt=0, description="Most gathered parameter elements kept on a device before release."
    )
    max_reuse_distance: int = Field(
        1_000_000_000, ge=0, description="Keep a gathered parameter if it is used again within this many elements."
    )


class OffloadBackend(Section):
    kind: Literal["accelerate-offload"] = Field(
        description="accelerate big-model placement: what does not fit the device goes to CPU, then disk."
    )
    offload_folder: str = Field("offload", description="Folder for disk-offloaded weights, relative to output_dir.")


class NaiveModelParallelBackend(Section):
    kind: Literal["naive-model-parallel"] = Field(
        description="One process; the decoder layers split over the node's devices in order."
    )


BackendSpec = Annotated[
    AutoBackend | Zero2Backend | Zero3Backend | OffloadBackend | NaiveModelParallelBackend,
    Field(discriminator="kind"),
]
