"""naive-model-parallel: one process; the layers split over the node's devices by the map the memory
planner computed its plan for (planner.planned_device_map), so the plan a user reads is what runs;
it is written to train_config.json at compile time."""

from __future__ import annotations

from pathlib import Path

from qcompile.compiler.diagnostics import Diagnostic

from .base import TRAIN_ARGV, cpu_env, single_process_accelerate_config
from .offload import execution_device, placement_budgets, resolve_output_dir


def planned_map(spec, spec_dir: Path) -> dict | None:
    """The planner's device_map for this spec (the one its memory plan is computed for), or None when
    the architecture is unknown: train.py then asks accelerate with max_memory instead."""
    from qcompile.compiler import planner

    try:
        arch = planner.resolve_architecture(spec, spec_dir)
    except planner.ArchitectureUnknown:
        return None
    return planner.planned_device_map(spec, arch)


class NaiveModelParallel:
    kind = "naive-model-parallel"
    uses_deepspeed = False
    script_parts = ("core", "staggered_load", "placement")

    def check(self, spec) -> list[Diagnostic]:
        return []

    def processes(self, spec) -> int:
        return 1

    def data_parallel_size(self, spec) -> int:
        return 1

    def ds_config(self, spec, spec_dir: Path) -> None:
        return None

    def accelerate_config(self, spec) -> dict:
        return single_process_accelerate_config(spec)

    def train_config(self, spec, spec_dir: Path) -> dict:
        return {
            "device_map": planned_map(spec, spec_dir),
            "execution_device": execution_device(spec),
            "max_memory": placement_budgets(spec, spec_dir, self.kind),
            "offload_folder": str(resolve_output_dir(spec, spec_dir) / "offload"),
        }

    def launch_argv(self, spec) -> list[str]:
        return ["python3", *TRAIN_ARGV]

    def launch_env(self, spec) -> dict[str, str]:
        return cpu_env(spec)
