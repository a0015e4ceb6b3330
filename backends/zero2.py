"""deepspeed-zero2: data parallel over every device; ZeRO stage 2 partitions the LoRA gradients and
optimizer states (the fp32 master weights) across ranks. Launched with torchrun; DeepSpeed runs
inside HF Trainer from the emitted ds_config.json."""

from __future__ import annotations

from pathlib import Path

from qcompile.compiler.diagnostics import Diagnostic, error

from .base import TRAIN_ARGV, cpu_env

MAX_GRAD_NORM = 1.0


class Zero2:
    kind = "deepspeed-zero2"
    uses_deepspeed = True

    def check(self, spec) -> list[Diagnostic]:
        out = []
        if spec.hardware.accelerator == "cpu" and spec.strategies.mixed_precision == "fp16":
            out.append(error(("strategies", "mixed_precision"), "DeepSpeed has no fp16 loss scaling on CPU",
                             "fp16_on_cpu", 'use bf16 or "no" with accelerator: cpu'))
        return out

    def processes(self, spec) -> int:
        return spec.hardware.devices_per_node

    def data_parallel_size(self, spec) -> int:
        return spec.hardware.world_size

    def ds_config(self, spec) -> dict:
        t, options, precision = spec.training, spec.backend, spec.strategies.mixed_precision
        zero = {
            "stage": 2,
            "overlap_comm": options.overlap_comm,
            "contiguous_gradients": True,
            "reduce_scatter": True,
            "reduce_bucket_size": options.reduce_bucket_size,
            "allgather_bucket_size": options.allgather_bucket_size,
        }
        if spec.strategies.offload.optimizer == "cpu":
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": spec.hardware.accelerator == "cuda"}
        config = {
            "train_micro_batch_size_per_gpu": t.micro_batch_size,
            "gradient_accumulation_steps": t.gradient_accumulation_steps,
            "train_batch_size": t.micro_batch_size * t.gradient_accumulation_steps * self.data_parallel_size(spec),
            "gradient_clipping": MAX_GRAD_NORM,
            "zero_optimization": zero,
            # Trainer hands DeepSpeed a torch AdamW: no JIT-built op, and allowed with optimizer offload.
            "zero_force_ds_cpu_optimizer": False,
            "zero_allow_untested_optimizer": True,
            "bf16": {"enabled": precision == "bf16"},
            "fp16": {"enabled": precision == "fp16"},
            "steps_per_print": 2**31 - 1,
            "wall_clock_breakdown": False,
        }
        if precision == "fp16":
            config["fp16"].update({"loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000,
                                   "hysteresis": 2, "min_loss_scale": 1})
        return config

    def accelerate_config(self, spec) -> dict:
        # With deepspeed_config_file, accelerate refuses its own copies of the DeepSpeed fields
        # (mixed_precision, gradient accumulation, offload, zero stage): they live in ds_config.json.
        return {
            "compute_environment": "LOCAL_MACHINE",
            "distributed_type": "DEEPSPEED",
            "deepspeed_config": {"deepspeed_config_file": "ds_config.json", "zero3_init_flag": False},
            "num_machines": spec.hardware.nodes,
            "num_processes": spec.hardware.world_size,
            "machine_rank": 0,
            "main_training_function": "main",
            "rdzv_backend": "static",
            "same_network": True,
            "use_cpu": spec.hardware.accelerator == "cpu",
        }

    def train_config(self, spec, spec_dir: Path) -> dict:
        return {"ds_config": "ds_config.json"}

    def launch_argv(self, spec) -> list[str]:
        argv = ["torchrun", f"--nproc-per-node={self.processes(spec)}", "--tee=3"]  # tee: rank-prefixed lines
        if spec.hardware.nodes > 1:
            argv += [f"--nnodes={spec.hardware.nodes}", "--rdzv-backend=c10d"]
        else:
            argv += ["--standalone"]
        return argv + TRAIN_ARGV

    def launch_env(self, spec) -> dict[str, str]:
        env = cpu_env(spec)
        if spec.hardware.accelerator == "cpu":
            # ACCELERATE_USE_CPU would make accelerate pick plain MULTI_CPU DDP over DeepSpeed.
            env.pop("ACCELERATE_USE_CPU")
            env["DS_ACCELERATOR"] = "cpu"
        return env
