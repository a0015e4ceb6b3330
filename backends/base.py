"""The contract every backend keeps, and the helpers several share.

A backend is one object: its kind, description, spec options, speed rank, what it accepts, its memory
model (`placement`), the generated-script parts it needs, its rules, its artifacts and its launch
command. Schema, checks, planner, CLI and templates derive from the registry of these objects.
Backends are pure: they never render, write files or import torch. Every method that takes a spec
gets one whose `backend` section holds this backend's own options (the compile context sees to it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from qcompile.compiler.context import CompileContext
    from qcompile.compiler.diagnostics import Diagnostic
    from qcompile.compiler.planner.memory import Context, DeviceUse, HostUse
    from qcompile.schemas._base import Section
    from qcompile.schemas.spec import Spec

# Every generated job is started the same way from its build directory.
TRAIN_ARGV = ["train.py", "--config", "train_config.json"]
# Values only known on each node at launch; a backend's launch argv may name them and launch.sh sets them
# from NODE_RANK/MASTER_ADDR/MASTER_PORT (or SLURM's variables) before it starts the launcher.
NODE_RANK, RDZV_ENDPOINT, RDZV_ID, RDZV_IS_HOST = (
    "${QCOMPILE_NODE_RANK}", "${QCOMPILE_RDZV_ENDPOINT}", "${QCOMPILE_RDZV_ID}", "${QCOMPILE_RDZV_IS_HOST}")
MASTER_ADDR, MASTER_PORT = "${MASTER_ADDR}", "${MASTER_PORT}"
LAUNCH_VARIABLES = (NODE_RANK, RDZV_ENDPOINT, RDZV_ID, RDZV_IS_HOST, MASTER_ADDR, MASTER_PORT)


@dataclass(frozen=True)
class Accepts:
    """What a backend can do with a spec; the rules and the planner's suggestions read this."""

    param_offload: tuple[str, ...] = ()  # where frozen base weights may go: "cpu", "disk"
    optimizer_offload: bool = False  # LoRA optimizer states on CPU (a DeepSpeed feature)
    layer_placement: bool = False  # places whole layers on devices: model.device_map applies
    multi_node: bool = True
    fp16_on_cpu: bool = True
    quantized_base: tuple[int, ...] = (4, 8)  # bitsandbytes bit widths of the frozen base it can load and train
    quantized_base_why: str = ""  # why the others are refused (shown in the error)
    optimizer_8bit: bool = True  # bitsandbytes' 8-bit AdamW as the LoRA optimizer
    paged_optimizer: bool = True  # its paged variant (CUDA unified memory; plain on CPU)
    adaptive_rank: bool = True  # AdaLoRA: its rank allocator reads every adapter's whole p.grad after backward
    adaptive_rank_why: str = ""
    dora: bool = True  # DoRA: needs each whole base weight for the column norm
    fp32_master_copy: bool = False  # the engine keeps fp32 master adapters itself (lora.dtype changes nothing)
    chunked_loss: bool = True  # strategies.loss chunked: calls the (whole) head once per chunk in its own gradient


@runtime_checkable
class Backend(Protocol):
    kind: str  # the spec's backend.kind
    description: str  # one line: shown in the schema, `qcompile plan` and the docs
    options: type[Section]  # its spec section's fields, without `kind` (the registry adds it)
    speed_rank: int  # lower is faster; `auto` tries backends in this order
    accepts: Accepts
    script_parts: tuple[str, ...]  # the generated train.py's parts (templates/script/), "core" first

    def check(self, spec: Spec) -> list[Diagnostic]:
        """Rules this backend adds beyond what `accepts` says (paths point into the spec)."""

    def placement(self, ctx: Context) -> tuple[list[DeviceUse], HostUse]:
        """The memory model: per-device bytes by category, and host RAM per node."""

    def default_param_offload(self, spec: Spec) -> str:
        """Where frozen weights that do not fit go when the spec leaves strategies.offload.params null."""

    def offload_folder(self, spec: Spec) -> tuple[str, tuple[str, ...]] | None:
        """Where the job offloads weights to disk (relative to output_dir) and the spec key that sets it;
        None when it never writes offloaded weights."""

    def overflow_reason(self, spec: Spec, device: DeviceUse) -> str | None:
        """Why a device over budget is over, when this backend knows better than the generic text."""

    def processes(self, spec: Spec) -> int:
        """Processes launched per node."""

    def data_parallel_size(self, spec: Spec) -> int:
        """Model replicas that see different data (the batch arithmetic's world size)."""

    def ds_config(self, ctx: CompileContext) -> dict | None:
        """The DeepSpeed JSON as a dict with concrete values, or None when DeepSpeed is not used."""

    def accelerate_config(self, spec: Spec) -> dict:
        """The accelerate config file as a dict."""

    def train_config(self, ctx: CompileContext) -> dict:
        """The backend's part of train_config.json (its `backend` section), which train.py reads."""

    def launch_argv(self, spec: Spec) -> list[str]:
        """The launcher command, run from the build directory."""

    def launch_env(self, spec: Spec) -> dict[str, str]:
        """Environment the launcher needs beyond the caller's (e.g. DS_ACCELERATOR=cpu)."""

    def hostfile_argv(self, spec: Spec) -> list[str] | None:
        """The DeepSpeed launcher's command equivalent to launch_argv on `hardware.nodes` nodes, run from the
        build directory with the emitted `hostfile` (MASTER_ADDR/MASTER_PORT set); None when the backend
        cannot be started that way."""


REQUIRED = tuple(name for name in Backend.__annotations__) + tuple(
    name for name, value in vars(Backend).items() if callable(value) and not name.startswith("_")
)


def cpu_env(spec: Spec) -> dict[str, str]:
    """What every CPU job needs: one thread per rank when ranks share the cores."""
    if spec.hardware.accelerator != "cpu":
        return {}
    env = {"ACCELERATE_USE_CPU": "true"}
    if spec.hardware.devices_per_node > 1:
        env["OMP_NUM_THREADS"] = "1"
    return env


def resolve_path(name: str, spec_dir: Path) -> Path:
    """A path from the spec, made absolute: relative paths are read from the spec's folder."""
    path = Path(name).expanduser()
    return (path if path.is_absolute() else Path(spec_dir) / path).resolve()


def resolve_output_dir(spec: Spec, spec_dir: Path) -> Path:
    return resolve_path(spec.training.output_dir, spec_dir)


def single_process_accelerate_config(spec: Spec) -> dict:
    """One process that places the model over the node's devices itself (no DDP, no DeepSpeed)."""
    return {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "NO",
        "num_machines": 1,
        "num_processes": 1,
        "machine_rank": 0,
        "main_training_function": "main",
        "mixed_precision": spec.strategies.mixed_precision,
        "use_cpu": spec.hardware.accelerator == "cpu",
        "gpu_ids": "all",
        "downcast_bf16": "no",
    }
