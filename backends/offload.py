"""accelerate-offload: one process; accelerate places the frozen base weights over the devices'
`max_memory`, then CPU, then the offload folder on disk. Only the LoRA weights train, and train.py
keeps them (and their gradients) real on the execution device."""

from __future__ import annotations

from pathlib import Path

from qcompile.compiler.diagnostics import Diagnostic, error

from .base import TRAIN_ARGV, cpu_env, resolve_path, single_process_accelerate_config


def resolve_output_dir(spec, spec_dir: Path) -> Path:
    return resolve_path(spec.training.output_dir, spec_dir)


def execution_device(spec) -> str | int:
    return "cpu" if spec.hardware.accelerator == "cpu" else 0


def activation_reserve(spec, spec_dir: Path, kind: str) -> int:
    """What the memory plan keeps on the main device besides weights (activations, logits, LoRA
    states, overheads): placing weights into the whole budget would leave no room to train."""
    from qcompile.compiler import planner

    try:
        arch = planner.resolve_architecture(spec, spec_dir)
    except planner.ArchitectureUnknown:
        return 0
    device = planner.plan(spec, arch, kind).devices[0]
    return max(device.peak - device.breakdown.get("weights", 0), 0)


def weight_budget(spec, spec_dir: Path, kind: str) -> int:
    return max(spec.hardware.device_memory - activation_reserve(spec, spec_dir, kind), 0)


def placement_budgets(spec, spec_dir: Path, kind: str = "accelerate-offload") -> dict[str, int]:
    """max_memory for accelerate: each device (less the plan's activation reserve), then host RAM
    when parameters may go to CPU. Keys are strings for JSON; train.py turns GPU indices into ints."""
    hw, params = spec.hardware, spec.strategies.offload.params
    per_device = weight_budget(spec, spec_dir, kind)
    if hw.accelerator == "cpu":
        return {"cpu": per_device}
    budgets = {str(i): per_device for i in range(hw.devices_per_node)}
    if params in ("cpu", "disk"):
        budgets["cpu"] = hw.host_memory
    return budgets


class Offload:
    kind = "accelerate-offload"
    uses_deepspeed = False
    script_parts = ("core", "staggered_load", "placement")

    def check(self, spec) -> list[Diagnostic]:
        out = []
        if spec.hardware.nodes > 1:
            out.append(error(("hardware", "nodes"), "accelerate-offload trains one process on one node",
                             "offload_single_node", "set hardware.nodes: 1, or use deepspeed-zero2"))
        return out

    def processes(self, spec) -> int:
        return 1  # one process places the model over all of the node's devices

    def data_parallel_size(self, spec) -> int:
        return 1

    def ds_config(self, spec, spec_dir: Path) -> None:
        return None

    def accelerate_config(self, spec) -> dict:
        return single_process_accelerate_config(spec)

    def train_config(self, spec, spec_dir: Path) -> dict:
        return {
            "device_map": None,  # accelerate infers it from max_memory at load time
            "device_map_strategy": spec.model.device_map or "sequential",
            "execution_device": execution_device(spec),
            "max_memory": placement_budgets(spec, spec_dir),
            "offload_folder": str(resolve_output_dir(spec, spec_dir) / spec.backend.offload_folder),
        }

    def launch_argv(self, spec) -> list[str]:
        return ["accelerate", "launch", "--config_file", "accelerate_config.yaml", *TRAIN_ARGV]

    def launch_env(self, spec) -> dict[str, str]:
        return cpu_env(spec)
