"""deepspeed-zero3: data parallel over every device; ZeRO stage 3 partitions the frozen base weights
too, from the moment they are loaded: train.py builds the DeepSpeed config before from_pretrained,
so transformers creates the model inside `zero.Init` and each rank keeps only its shard. Each layer's
weights are gathered just before use and released after. Launched with torchrun like ZeRO-2."""

from __future__ import annotations

from pathlib import Path

from . import zero_common

# DeepSpeed's own defaults, used when the architecture (hence hidden_size) is unknown.
DEEPSPEED_DEFAULTS = {"reduce": 500_000_000, "prefetch": 50_000_000, "persistence": 100_000}


def stage3_sizes(options, hidden_size: int | None) -> dict[str, int]:
    """Bucket and threshold sizes in elements: the spec's, else what HF's "auto" would derive from
    hidden_size (buckets of one hidden x hidden matrix; vectors shorter than ten rows stay whole)."""
    derived = DEEPSPEED_DEFAULTS if hidden_size is None else {
        "reduce": hidden_size * hidden_size,
        "prefetch": int(0.9 * hidden_size * hidden_size),
        "persistence": 10 * hidden_size,
    }
    return {
        "reduce": options.reduce_bucket_size or derived["reduce"],
        "prefetch": options.prefetch_bucket_size or derived["prefetch"],
        "persistence": derived["persistence"] if options.param_persistence_threshold is None
        else options.param_persistence_threshold,
    }


def hidden_size(spec, spec_dir: Path) -> int | None:
    from qcompile.compiler import planner

    try:
        return planner.resolve_architecture(spec, spec_dir).hidden_size
    except planner.ArchitectureUnknown:
        return None


def zero3_section(spec, spec_dir: Path) -> dict:
    options = spec.backend
    sizes = stage3_sizes(options, hidden_size(spec, spec_dir))
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


ZERO3 = zero_common.ZeroBackend("deepspeed-zero3", 3, zero3_section, script_parts=("core", "deepspeed", "zero3_load"))
