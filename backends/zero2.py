"""deepspeed-zero2: data parallel over every device; ZeRO stage 2 partitions the LoRA gradients and
optimizer states (the fp32 master weights) across ranks. Launched with torchrun; DeepSpeed runs
inside HF Trainer from the emitted ds_config.json."""

from __future__ import annotations

from pathlib import Path

from qcompile.compiler.diagnostics import Diagnostic

from . import zero_common


class Zero2:
    kind = "deepspeed-zero2"
    uses_deepspeed = True

    def check(self, spec) -> list[Diagnostic]:
        return zero_common.check_precision(spec)

    def processes(self, spec) -> int:
        return spec.hardware.devices_per_node

    def data_parallel_size(self, spec) -> int:
        return spec.hardware.world_size

    def ds_config(self, spec, spec_dir: Path) -> dict:
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
        return zero_common.ds_config(spec, zero)

    def accelerate_config(self, spec) -> dict:
        return zero_common.accelerate_config(spec, zero3_init=False)

    def train_config(self, spec, spec_dir: Path) -> dict:
        return {"ds_config": "ds_config.json"}

    def launch_argv(self, spec) -> list[str]:
        return zero_common.launch_argv(spec)

    def launch_env(self, spec) -> dict[str, str]:
        return zero_common.launch_env(spec)
