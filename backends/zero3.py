"""deepspeed-zero3: data parallel over every device; ZeRO stage 3 partitions the frozen base weights
too, from the moment they are loaded: train.py builds the DeepSpeed config before from_pretrained,
so transformers creates the model inside `zero.Init` and each rank keeps only its shard. Each layer's
weights are gathered just before use and released after. Launched with torchrun like ZeRO-2."""

from __future__ import annotations

from pydantic import Field

from . import zero_common
from .base import Accepts
from .zero_memory import stage3_sizes


class Zero3Options(zero_common.ZeroOptions):
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


def zero3_section(spec, hidden_size: int | None) -> dict:
    options = spec.backend
    sizes = stage3_sizes(options, hidden_size)
    zero = {
        "stage": 3,
        "overlap_comm": options.overlap_comm,
        "contiguous_gradients": True,
        "reduce_bucket_size": sizes["reduce"],
        "stage3_prefetch_bucket_size": sizes["prefetch"],
        "stage3_param_persistence_threshold": sizes["persistence"],
        "stage3_max_live_parameters": options.max_live_parameters,
        "stage3_max_reuse_distance": options.max_reuse_distance,
        # The Trainer gathers only the trainable (LoRA) weights when saving; a full 16-bit
        # gather of the frozen base would be the whole model on rank 0 at every checkpoint.
        "stage3_gather_16bit_weights_on_model_save": False,
    }
    if spec.strategies.offload.optimizer == "cpu":
        zero["offload_optimizer"] = zero_common.offload_target(spec)
    if spec.strategies.offload.params == "cpu":
        zero["offload_param"] = zero_common.offload_target(spec)
    return zero


ZERO3 = zero_common.ZeroBackend(
    kind="deepspeed-zero3",
    description="DeepSpeed ZeRO stage 3 data parallelism: the frozen weights are sharded too, from load on.",
    stage=3,
    options=Zero3Options,
    speed_rank=20,  # data parallel, but every layer's weights are gathered before use
    accepts=Accepts(
        param_offload=("cpu",), optimizer_offload=True, fp16_on_cpu=False, quantized_base=(),
        quantized_base_why="transformers builds a quantised model outside zero.Init, so every rank would load the "
        "whole quantised model before DeepSpeed partitions it (4-bit trains on CPU that way with "
        "bnb_4bit_quant_storage set, measured; qcompile does not plan or emit that load yet)",
        # DoRA is accepted: peft gathers each weight for its norm (measured)
        adaptive_rank=False, fp32_master_copy=True, chunked_loss=False,
        adaptive_rank_why="peft's allocator multiplies each adapter by its full gradient, which fails once "
        "ZeRO-3 partitions the adapter (it ran on CPU only for adapters below stage3_param_persistence_threshold)",
    ),
    zero_section=zero3_section,
    script_parts=("core", "deepspeed", "zero3_load"),
)
