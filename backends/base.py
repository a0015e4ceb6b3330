"""The contract every backend keeps. Backends are small pure objects: they check a spec, build the
artifact dicts and the launch argv. They never render, write files or import torch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from qcompile.compiler.diagnostics import Diagnostic
    from qcompile.schemas import Spec

# Every generated job is started the same way from its build directory.
TRAIN_ARGV = ["train.py", "--config", "train_config.json"]


class Backend(Protocol):
    kind: str  # the spec's backend.kind
    uses_deepspeed: bool
    script_parts: tuple[str, ...]  # the generated train.py's parts (templates/script/), "core" first

    def check(self, spec: Spec) -> list[Diagnostic]:
        """Cross-field rules this backend adds (paths point into the spec)."""

    def processes(self, spec: Spec) -> int:
        """Processes launched per node."""

    def data_parallel_size(self, spec: Spec) -> int:
        """Model replicas that see different data (the batch arithmetic's world size)."""

    def ds_config(self, spec: Spec, spec_dir: Path) -> dict | None:
        """The DeepSpeed JSON as a dict with concrete values, or None when DeepSpeed is not used."""

    def accelerate_config(self, spec: Spec) -> dict:
        """The accelerate config file as a dict."""

    def train_config(self, spec: Spec, spec_dir: Path) -> dict:
        """The backend's part of train_config.json (its `backend` section), which train.py reads."""

    def launch_argv(self, spec: Spec) -> list[str]:
        """The launcher command, run from the build directory."""

    def launch_env(self, spec: Spec) -> dict[str, str]:
        """Environment the launcher needs beyond the caller's (e.g. DS_ACCELERATOR=cpu)."""


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
