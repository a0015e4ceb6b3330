"""`backend:` which engine trains; a name, or a mapping with `kind` and that engine's options."""

from typing import Annotated, Literal

from pydantic import Field

from ._base import Section

BACKEND_KINDS = ("auto", "deepspeed-zero2", "accelerate-offload", "naive-model-parallel")


class AutoBackend(Section):
    kind: Literal["auto"] = Field(description="Pick the fastest backend whose plan fits the budget.")


class Zero2Backend(Section):
    kind: Literal["deepspeed-zero2"] = Field(description="DeepSpeed ZeRO stage 2 data parallelism.")
    overlap_comm: bool = Field(True, description="Overlap gradient reduction with backward.")
    reduce_bucket_size: int = Field(50_000_000, gt=0, description="Elements per gradient-reduction bucket.")
    allgather_bucket_size: int = Field(50_000_000, gt=0, description="Elements per all-gather bucket.")


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
    AutoBackend | Zero2Backend | OffloadBackend | NaiveModelParallelBackend,
    Field(discriminator="kind"),
]
