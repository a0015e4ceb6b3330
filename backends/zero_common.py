"""What the two DeepSpeed ZeRO backends share: one backend class, the torchrun launch, the CPU
environment, the batch/precision part of ds_config.json and the accelerate config that points at it.
Each stage's module supplies only its `zero_optimization` section."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import Field

from qcompile.compiler.diagnostics import Diagnostic
from qcompile.compiler.planner.memory import Context, DeviceUse, HostUse
from qcompile.schemas._base import Section
from qcompile.schemas.units import format_bytes

from .base import (
    MASTER_ADDR,
    MASTER_PORT,
    RDZV_ENDPOINT,
    RDZV_ID,
    RDZV_IS_HOST,
    TRAIN_ARGV,
    Accepts,
    cpu_env,
)
from .zero_memory import zero_placement

MAX_GRAD_NORM = 1.0


def offload_target(spec) -> dict:
    return {"device": "cpu", "pin_memory": spec.hardware.accelerator == "cuda"}


def ds_config(spec, zero: dict) -> dict:
    """The full DeepSpeed JSON around a `zero_optimization` section, every value concrete."""
    t, precision = spec.training, spec.strategies.mixed_precision
    config = {
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "train_batch_size": t.micro_batch_size * t.gradient_accumulation_steps * spec.hardware.world_size,
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


def accelerate_config(spec, zero3_init: bool) -> dict:
    # With deepspeed_config_file, accelerate refuses its own copies of the DeepSpeed fields
    # (mixed_precision, gradient accumulation, offload, zero stage): they live in ds_config.json.
    return {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "DEEPSPEED",
        "deepspeed_config": {"deepspeed_config_file": "ds_config.json", "zero3_init_flag": zero3_init},
        "num_machines": spec.hardware.nodes,
        "num_processes": spec.hardware.world_size,
        "machine_rank": 0,
        "main_training_function": "main",
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": spec.hardware.accelerator == "cpu",
    }


def launch_argv(spec) -> list[str]:
    hw = spec.hardware
    argv = ["torchrun", f"--nproc-per-node={hw.devices_per_node}", "--tee=3"]  # tee: rank-prefixed lines
    if hw.nodes == 1:
        return [*argv, "--standalone", *TRAIN_ARGV]
    # One torchrun agent per node, meeting over c10d at node 0 (which hosts the store, is_host). A lost
    # node fails the job instead of a re-rendezvous: no restarts, and join_timeout bounds the start.
    rdzv = rendezvous_timeouts(spec)
    conf = ",".join([f"is_host={RDZV_IS_HOST}", *(f"{k}={v}" for k, v in rdzv.items())])
    # c10d assigns ranks itself (torchrun ignores --node-rank with it); NODE_RANK decides who hosts the store.
    return [*argv, f"--nnodes={hw.nodes}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={RDZV_ENDPOINT}", f"--rdzv-id={RDZV_ID}", f"--rdzv-conf={conf}",
            "--max-restarts=0", "--monitor-interval=1", *TRAIN_ARGV]


def rendezvous_timeouts(spec) -> dict[str, int]:
    """torchrun's rendezvous settings, every one explicit: nodes wait join_timeout for each other; the
    agents' keep-alives to the store go every 5 s and give up after 3 misses."""
    join = spec.hardware.rendezvous.join_timeout
    return {"join_timeout": join, "last_call_timeout": min(30, join), "close_timeout": 30,
            "heartbeat": 30, "keep_alive_interval": 5, "keep_alive_max_attempt": 3, "read_timeout": 60}


def hostfile_argv(spec) -> list[str] | None:
    """The DeepSpeed launcher (pdsh/ssh) on the emitted hostfile: the same job as launch.sh on every node."""
    hw = spec.hardware
    return ["deepspeed", "--hostfile=hostfile", f"--num_nodes={hw.nodes}", f"--num_gpus={hw.devices_per_node}",
            f"--master_addr={MASTER_ADDR}", f"--master_port={MASTER_PORT}", "--no_local_rank", *TRAIN_ARGV]


def launch_env(spec) -> dict[str, str]:
    env = cpu_env(spec)
    if spec.hardware.accelerator == "cpu":
        # ACCELERATE_USE_CPU would make accelerate pick plain MULTI_CPU DDP over DeepSpeed.
        env.pop("ACCELERATE_USE_CPU")
        env["DS_ACCELERATOR"] = "cpu"
    return env


class ZeroOptions(Section):
    """Options every ZeRO stage has."""

    overlap_comm: bool = Field(True, description="Overlap gradient reduction (and, in stage 3, parameter "
                               "gathering) with compute.")


@dataclass(frozen=True)
class ZeroBackend:
    """A DeepSpeed ZeRO backend: data parallel over every device, launched with torchrun; the stage
    decides what is partitioned, through its `zero_optimization` section and its memory model."""

    kind: str
    description: str
    stage: int
    options: type[Section]
    speed_rank: int
    accepts: Accepts
    zero_section: Callable[..., dict]  # (spec, hidden_size or None) -> zero_optimization
    script_parts: tuple[str, ...]  # train.py's parts (templates/script)

    def check(self, spec) -> list[Diagnostic]:
        return []

    def placement(self, ctx: Context) -> tuple[list[DeviceUse], HostUse]:
        return zero_placement(ctx, self.stage)

    def default_param_offload(self, spec) -> str:
        return "none"

    def offload_folder(self, spec) -> None:
        return None  # DeepSpeed offloads to CPU memory only, as the spec allows

    def overflow_reason(self, spec, device: DeviceUse) -> str | None:
        weights = device.breakdown["weights"]
        if self.stage == 2 and weights > device.budget:
            return (f"ZeRO-2 replicates the frozen weights on every GPU: {format_bytes(weights)} of "
                    f"{spec.model.dtype} weights per GPU cannot fit {format_bytes(device.budget)}")
        return None

    def processes(self, spec) -> int:
        return spec.hardware.devices_per_node

    def data_parallel_size(self, spec) -> int:
        return spec.hardware.world_size

    def ds_config(self, ctx) -> dict:
        hidden = ctx.arch.hidden_size if ctx.arch is not None else None
        return ds_config(ctx.spec, self.zero_section(ctx.spec, hidden))

    def accelerate_config(self, spec) -> dict:
        return accelerate_config(spec, zero3_init=self.stage == 3)

    def train_config(self, ctx) -> dict:
        # peer_timeout: how long a collective waits on a silent peer (torch.distributed's timeout)
        return {"ds_config": "ds_config.json", "peer_timeout_s": ctx.spec.hardware.rendezvous.peer_timeout}

    def launch_argv(self, spec) -> list[str]:
        return launch_argv(spec)

    def launch_env(self, spec) -> dict[str, str]:
        return launch_env(spec)

    def hostfile_argv(self, spec) -> list[str]:
        return hostfile_argv(spec)
