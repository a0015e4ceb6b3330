"""naive-model-parallel: one process; the model is cut into consecutive blocks (embedding, each
decoder layer, final norm + head) placed in order over the node's devices, each within its budget,
then CPU and disk when the spec allows parameter offload. The map is computed here, at compile
time, from the architecture's per-module sizes, so it is visible in train_config.json."""

from __future__ import annotations

from pathlib import Path

from qcompile.compiler.diagnostics import Diagnostic, error

from .base import TRAIN_ARGV, cpu_env
from .offload import execution_device, resolve_output_dir, weight_budget

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


class DoesNotFit(ValueError):
    """The modules need more memory than every budget together."""


def assign_modules(sizes: list[tuple[str, int]], budgets: list[tuple[str | int, int | None]]) -> dict:
    """Place modules in order: fill the first device, then move on; never go back (activations
    flow one way). A budget of None is unbounded (disk). Raises DoesNotFit."""
    device_map: dict[str, str | int] = {}
    index, used = 0, 0
    for name, size in sizes:
        while budgets[index][1] is not None and used + size > budgets[index][1]:
            index, used = index + 1, 0
            if index == len(budgets):
                raise DoesNotFit(f"{name} ({size} bytes) fits on no device left")
        device_map[name] = budgets[index][0]
        used += size
    return device_map


def module_sizes(arch, dtype: str) -> list[tuple[str, int]]:
    """Bytes of each placeable block of a Llama-family causal LM, in forward order."""
    width = DTYPE_BYTES[dtype]
    sizes = [("model.embed_tokens", arch.embedding_params() * width), ("model.rotary_emb", 0)]
    sizes += [(f"model.layers.{i}", arch.layer_params() * width) for i in range(arch.num_layers)]
    sizes.append(("model.norm", arch.hidden_size * width))
    head = 0 if arch.tie_word_embeddings else arch.vocab_size * arch.hidden_size * width
    sizes.append(("lm_head", head))
    return sizes


def device_budgets(spec, per_device: int | None = None) -> list[tuple[str | int, int | None]]:
    """Weight budgets in placement order; per_device defaults to hardware.device_memory."""
    hw, params = spec.hardware, spec.strategies.offload.params
    per_device = hw.device_memory if per_device is None else per_device
    if hw.accelerator == "cpu":
        budgets: list = [("cpu", per_device)]
    else:
        budgets = [(i, per_device) for i in range(hw.devices_per_node)]
        if params in ("cpu", "disk"):
            budgets.append(("cpu", hw.host_memory))
    if params == "disk":
        budgets.append(("disk", None))
    return budgets


def planned_map(spec, spec_dir: Path) -> dict | None:
    """The device_map for this spec, or None when the architecture is unknown (train.py then asks
    accelerate with the same budgets)."""
    from qcompile.compiler import planner

    try:
        arch = planner.resolve_architecture(spec, spec_dir)
    except planner.ArchitectureUnknown:
        return None
    budgets = device_budgets(spec, weight_budget(spec, spec_dir, "naive-model-parallel"))
    device_map = assign_modules(module_sizes(arch, spec.model.dtype), budgets)
    if arch.tie_word_embeddings:  # a tied head must sit with the embedding it shares
        device_map["lm_head"] = device_map["model.embed_tokens"]
    return device_map


class NaiveModelParallel:
    kind = "naive-model-parallel"
    uses_deepspeed = False

    def check(self, spec) -> list[Diagnostic]:
        return []

    def processes(self, spec) -> int:
        return 1

    def data_parallel_size(self, spec) -> int:
        return 1

    def ds_config(self, spec, spec_dir: Path) -> None:
        return None

    def accelerate_config(self, spec) -> dict:
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

    def train_config(self, spec, spec_dir: Path) -> dict:
        budgets = device_budgets(spec, weight_budget(spec, spec_dir, self.kind))
        return {
            "device_map": planned_map(spec, spec_dir),
            "execution_device": execution_device(spec),
            "max_memory": {str(device): size for device, size in budgets if size is not None},
            "offload_folder": str(resolve_output_dir(spec, spec_dir) / "offload"),
        }

    def launch_argv(self, spec) -> list[str]:
        return ["python", *TRAIN_ARGV]

    def launch_env(self, spec) -> dict[str, str]:
        return cpu_env(spec)
