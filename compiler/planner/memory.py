"""The memory model's shared parts: what one device and one node hold, and the Context every backend's
placement (its `placement(ctx)`, in backends/) reads. Each placement returns per-device breakdowns
(bytes by category) and the node's host RAM at load and in training. Assumptions, stated once:

- DeepSpeed (ZeRO-2/3) casts the whole module, adapters included, to the bf16/fp16 compute dtype and
  keeps an fp32 master copy, Adam moments and fp32 gradients of the LoRA weights partitioned over the
  data-parallel ranks. The HF/accelerate paths keep peft's fp32 adapters with torch AdamW (16 bytes per
  LoRA parameter with gradients, which persist across micro-batches only when accumulating).
- Layer-splitting backends place the decoder layers in contiguous blocks, the embedding with the first
  device and the final norm, lm_head and the loss with the last; offloaded layers (and then the head)
  run on the first; that layout is also the device_map the layer-placing job loads with.
- A bf16 checkpoint loaded as bf16 with low_cpu_mem_usage is memory-mapped: the ranks of a node share
  one copy in the page cache. Any dtype conversion (or a load without low_cpu_mem_usage) gives each
  rank a private copy, about 1.8x its size at peak (bench/planner_accuracy.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qcompile.schemas.units import format_bytes

from .activations import StepShape
from .architecture import DTYPE_BYTES, Architecture

GiB = 2**30
CUDA_CONTEXT = GiB // 2  # CUDA context, cuBLAS workspace and NCCL buffers per GPU process
FRAGMENTATION = 0.05  # caching-allocator slack over the tensor peak
HOST_PER_PROCESS = {"cuda": 3 * GiB, "cpu": 1 * GiB}  # python, torch, CUDA runtime, DeepSpeed
PRIVATE_LOAD_FACTOR = 1.8  # converted copy + the mapped source pages + transients: bench measured 1.78x
TENSOR_KEYS = ("weights", "lora_states", "activations", "logits")


@dataclass
class DeviceUse:
    name: str
    breakdown: dict[str, int]
    budget: int
    note: str = ""

    @property
    def tensor_bytes(self) -> int:
        return sum(self.breakdown.get(k, 0) for k in TENSOR_KEYS)

    @property
    def peak(self) -> int:
        return sum(self.breakdown.values())


@dataclass
class HostUse:
    load_peak: int
    train_peak: int
    budget: int
    disk: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class Context:
    """Everything the placements read, derived once from the spec and architecture."""

    spec: object
    arch: Architecture
    step: dict = field(default_factory=dict)  # StepShape fields the strategies set (seq, checkpointing, ...)

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.spec.model.dtype]

    @property
    def weight_bytes(self) -> int:
        return self.arch.num_params() * self.dtype_bytes

    @property
    def lora_params(self) -> int:
        lora = self.spec.lora
        return self.arch.lora_params(lora.r, lora.target_modules, lora.layers)

    def lora_params_in(self, layers: range) -> int:
        lora = self.spec.lora
        chosen = [i for i in self.arch.lora_layers(lora.layers) if i in layers]
        return self.arch.lora_params(lora.r, lora.target_modules, chosen) if chosen else 0

    def shape(self, adapter_bytes: int) -> StepShape:
        s = self.spec
        return StepShape(**{
            "batch": s.training.micro_batch_size,
            "dtype_bytes": self.dtype_bytes,
            "adapter_bytes": adapter_bytes,
            "r": s.lora.r,
            "targets": frozenset(s.lora.target_modules),
            "lora_layers": frozenset(self.arch.lora_layers(s.lora.layers)),
            "dropout": s.lora.dropout,
            "dropout_mask_bytes": 1 if s.hardware.accelerator == "cuda" else None,
            **self.step,
        })

    def overheads(self, tensors: int, buckets: int = 0) -> dict[str, int]:
        cuda = CUDA_CONTEXT if self.spec.hardware.accelerator == "cuda" else 0
        return {"comm_buckets": buckets, "runtime_context": cuda, "fragmentation": int(tensors * FRAGMENTATION)}

    def host_load(self, processes: int, private_bytes_per_rank: int | None = None) -> tuple[int, str]:
        """Host RAM of one node while `processes` ranks load the weights, and why."""
        s, arch = self.spec, self.arch
        stored = arch.checkpoint_dtype or s.model.dtype
        file_bytes = arch.num_params() * DTYPE_BYTES[stored]
        runtime = processes * HOST_PER_PROCESS[s.hardware.accelerator]
        if s.strategies.low_cpu_mem_usage and stored == s.model.dtype:
            return file_bytes + runtime, (
                f"{stored} safetensors memory-mapped: {processes} rank(s) share one "
                f"{format_bytes(file_bytes)} copy in the page cache"
            )
        private = self.weight_bytes if private_bytes_per_rank is None else private_bytes_per_rank
        why = "low_cpu_mem_usage is off" if not s.strategies.low_cpu_mem_usage else (
            f"loading {stored} weights as {s.model.dtype} converts them"
        )
        per_rank = int(PRIVATE_LOAD_FACTOR * private)
        return processes * per_rank + runtime, (
            f"{why}: each of {processes} rank(s) holds a private copy, about {format_bytes(per_rank)} at peak "
            f"({processes} x {format_bytes(per_rank)} = {format_bytes(processes * per_rank)})"
        )

    def checkpoint_disk(self) -> int:
        return 16 * self.lora_params  # fp32 adapter plus optimizer states per saved checkpoint


def device_use(ctx: Context, name: str, parts: dict[str, int], buckets: int = 0, note: str = "") -> DeviceUse:
    """A device holding `parts` (tensor bytes by category) plus the runtime overheads they imply."""
    tensors = sum(parts.values())
    return DeviceUse(name, {**parts, **ctx.overheads(tensors, buckets)}, ctx.spec.hardware.device_memory, note)
