"""naive-model-parallel: one process; the layers split over the node's devices by the map the memory
plan is computed for (layer_placement.planned_device_map), so the plan a user reads is what runs;
it is written to train_config.json at compile time."""

from __future__ import annotations

from qcompile.compiler.diagnostics import Diagnostic, warning
from qcompile.compiler.planner.memory import Context, DeviceUse, HostUse
from qcompile.schemas._base import Section

from .base import TRAIN_ARGV, Accepts, cpu_env, resolve_output_dir, single_process_accelerate_config
from .layer_placement import naive_model_parallel, planned_device_map
from .offload import execution_device, placement_budgets

OFFLOAD_FOLDER = "offload"


class NaiveModelParallelOptions(Section):
    """No options: the planner owns the split."""


class NaiveModelParallel:
    kind = "naive-model-parallel"
    description = "One process; the decoder layers split over the node's devices in order."
    options = NaiveModelParallelOptions
    speed_rank = 30  # one device computes at a time
    accepts = Accepts(param_offload=("cpu", "disk"), layer_placement=True, multi_node=False)
    script_parts = ("core", "staggered_load", "placement")

    def check(self, spec) -> list[Diagnostic]:
        if spec.model.device_map is not None:
            return [warning(("model", "device_map"), f"{self.kind} loads the split its memory plan computes (see "
                            "`qcompile plan`); model.device_map is not used", "device_map_ignored",
                            "remove model.device_map, or use a backend that lets accelerate place layers")]
        return []

    def placement(self, ctx: Context) -> tuple[list[DeviceUse], HostUse]:
        return naive_model_parallel(ctx)

    def default_param_offload(self, spec) -> str:
        return "none"

    def offload_folder(self, spec) -> tuple[str, tuple[str, ...]]:
        return OFFLOAD_FOLDER, ("backend",)  # fixed: the planner owns the split, the spec has no key for it

    def overflow_reason(self, spec, device: DeviceUse) -> str | None:
        return None

    def processes(self, spec) -> int:
        return 1

    def data_parallel_size(self, spec) -> int:
        return 1

    def ds_config(self, ctx) -> None:
        return None

    def accelerate_config(self, spec) -> dict:
        return single_process_accelerate_config(spec)

    def train_config(self, ctx) -> dict:
        # Without an architecture there is no plan: train.py then asks accelerate with max_memory instead.
        device_map = planned_device_map(ctx.memory_context) if ctx.arch is not None else None
        return {
            "device_map": device_map,
            "execution_device": execution_device(ctx.spec),
            "max_memory": placement_budgets(ctx),
            "offload_folder": str(resolve_output_dir(ctx.spec, ctx.spec_dir) / OFFLOAD_FOLDER),
        }

    def launch_argv(self, spec) -> list[str]:
        return ["python3", *TRAIN_ARGV]

    def launch_env(self, spec) -> dict[str, str]:
        return cpu_env(spec)

    def hostfile_argv(self, spec) -> None:
        return None  # one process on one node


NAIVE_MODEL_PARALLEL = NaiveModelParallel()
