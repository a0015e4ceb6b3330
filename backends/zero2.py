"""deepspeed-zero2: ZeRO stage 2 partitions the LoRA gradients and optimizer states (the fp32 master
weights) across ranks; every rank keeps the whole frozen base. DeepSpeed runs inside HF Trainer from
the emitted ds_config.json."""

from __future__ import annotations

from pathlib import Path

from . import zero_common


def zero2_section(spec, spec_dir: Path) -> dict:
    options = spec.backend
    zero = {
        "stage": 2,
        "overlap_comm": options.overlap_comm,
        "contiguous_gradients": True,
        "reduce_scatter": True,
        "reduce_bucket_size": options.reduce_bucket_size,
        "allgather_bucket_size": options.allgather_bucket_size,
    }
    if spec.strategies.offload.optimizer == "cpu":
        zero["offload_optimizer"] = zero_common.offload_target(spec)
    return zero


ZERO2 = zero_common.ZeroBackend("deepspeed-zero2", 2, zero2_section)
