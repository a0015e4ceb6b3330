"""accelerate-offload: one process; accelerate places the frozen base weights over the devices'
`max_memory`, then CPU, then the offload folder on disk. Only the LoRA weights train, and train.py
keeps them (and their gradients) real on the execution device."""

from __future__ import annotations

from pydantic import Field

from qcompile.compiler.diagnostics import Diagnostic
from qcompile.compiler.planner.memory import Context, DeviceUse, HostUse
from qcompile.schemas._base import Section

from .base import TRAIN_ARGV, Accepts, cpu_env, resolve_output_dir, single_process_accelerate_config
from .layer_placement import accelerate_offload


class OffloadOptions(Section):
    offload_folder: str = Field("offload", description="Folder for disk-offloaded weights, relative to output_dir.")


def execution_device(spec) -> str | int:
    return "cpu" if spec.hardware.accelerator == "cpu" else 0


def activation_reserve(ctx) -> int:
    """What the memory plan keeps on the main device besides weights (activations, logits, LoRA
    states, overheads): placing weights into the whole budget would leave no room to train."""
    if ctx.plan is None:
        return 0
    device = ctx.plan.devices[0]
    return max(device.peak - device.breakdown.get("weights", 0), 0)


def placement_budgets(ctx) -> dict[str, int]:
    """max_memory for accelerate: each device (less the plan's activation reserve), then host RAM
    when parameters may go to CPU. Keys are strings for JSON; train.py turns GPU indices into ints."""
    hw, params = ctx.spec.hardware, ctx.spec.strategies.offload.params
    per_device = max(hw.device_memory - activation_reserve(ctx), 0)
    if hw.accelerator == "cpu":
        return {"cpu": per_device}
    budgets = {str(i): per_device for i in range(hw.devices_per_node)}
    if params in ("cpu", "disk"):
        budgets["cpu"] = hw.host_memory
    return budgets


class Offload:
    kind = "accelerate-offload"
    description = "accelerate big-model placement: what does not fit the device goes to CPU, then disk."
    options = OffloadOptions
    speed_rank = 40  # streams weights from CPU or disk: the slowest, and the last resort
    accepts = Accepts(param_offload=("cpu", "disk"), layer_placement=True, multi_node=False)
    script_parts = ("core", "staggered_load", "placement")

    def check(self, spec) -> list[Diagnostic]:
        return []

    def placement(self, ctx: Context) -> tuple[list[DeviceUse], HostUse]:
        return accelerate_offload(ctx)

    def default_param_offload(self, spec) -> str:
        return "cpu"  # what does not fit the devices goes to host RAM (and the plan says if that is too much)

    def offload_folder(self, spec) -> tuple[str, tuple[str, ...]]:
        return spec.backend.offload_folder, ("backend", "offload_folder")

    def overflow_reason(self, spec, device: DeviceUse) -> str | None:
        return None

    def processes(self, spec) -> int:
        return 1  # one process places the model over all of the node's devices

    def data_parallel_size(self, spec) -> int:
        return 1

    def ds_config(self, ctx) -> None:
        return None

    def accelerate_config(self, spec) -> dict:
        return single_process_accelerate_config(spec)

    def train_config(self, ctx) -> dict:
        spec = ctx.spec
        return {
            "device_map": None,  # accelerate infers it from max_memory at load time
            "device_map_strategy": spec.model.device_map or "sequential",
            "execution_device": execution_device(spec),
            "max_memory": placement_budgets(ctx),
            "offload_folder": str(resolve_output_dir(spec, ctx.spec_dir) / self.offload_folder(spec)[0]),
        }

    def launch_argv(self, spec) -> list[str]:
        return ["accelerate", "launch", "--config_file", "accelerate_config.yaml", *TRAIN_ARGV]

    def launch_env(self, spec) -> dict[str, str]:
        return cpu_env(spec)

    def hostfile_argv(self, spec) -> None:
        return None  # one process on one node


OFFLOAD = Offload()
