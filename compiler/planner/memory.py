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

import math
from dataclasses import dataclass, field, replace

from qcompile.schemas.units import format_bytes

from .activations import StepShape
from .architecture import DTYPE_BYTES, Architecture

GiB = 2**30
CUDA_CONTEXT = GiB // 2  # CUDA context, cuBLAS workspace and NCCL buffers per GPU process
FRAGMENTATION = 0.05  # caching-allocator slack over the tensor peak
HOST_PER_PROCESS = {"cuda": 3 * GiB, "cpu": 1 * GiB}  # python, torch, CUDA runtime, DeepSpeed
PRIVATE_LOAD_FACTOR = 1.8  # converted copy + the mapped source pages + transients: bench measured 1.78x
TENSOR_KEYS = ("weights", "lora_states", "activations", "logits")
ALL_LINEAR = "all-linear"
# bitsandbytes' storage, read off its layers on CPU (tests/compiler/planner/test_quantized_memory.py):
QUANT_BLOCK = 64  # 4-bit: one absmax per 64 weights (fp32, or 8-bit under double quant)
NESTED_BLOCK = 256  # double quant: one fp32 absmax per 256 first-level absmax, plus a 256-entry fp32 code
NF4_CODE_BYTES = 16 * 4  # each 4-bit weight's own 16-entry fp32 code
CODE_BYTES = 256 * 4
MIN_8BIT_SIZE = 4096  # bitsandbytes keeps 32-bit optimizer states for smaller tensors
STATE_BLOCK = 256  # its 8-bit states: one fp32 absmax per 256 values per state, and a 256-entry qmap each
ADAPTER_BYTES = {"float32": 4, "bfloat16": 2}


def resolve_targets(targets, arch: Architecture | None) -> list[str] | str:
    """lora.target_modules as peft gets it: "all-linear" becomes the decoder's Linear modules when the
    architecture is known (peft's own "all-linear", which also skips the head, otherwise)."""
    if targets == ALL_LINEAR:
        return list(arch.linear_modules()) if arch is not None else ALL_LINEAR
    return list(targets)


def linear_bytes(quant, fan_in: int, fan_out: int, dtype_bytes: int) -> int:
    """Bytes of one frozen Linear weight: unquantised, 4-bit (packed pairs, block absmax) or 8-bit (int8
    plus one fp32 scale per output row)."""
    n = fan_in * fan_out
    if quant is None:
        return n * dtype_bytes
    if quant.bits == 8:
        return n + 4 * fan_out
    blocks = math.ceil(n / QUANT_BLOCK)
    if quant.double_quant:
        absmax = blocks + 4 * math.ceil(blocks / NESTED_BLOCK) + CODE_BYTES + 4  # + the fp32 offset
    else:
        absmax = 4 * blocks
    return math.ceil(n / 2) + absmax + NF4_CODE_BYTES


def optimizer_state_bytes(optimizer: str, numels: list[int], param_bytes: int) -> int:
    """AdamW's two moments for these tensors: like the parameters for torch's AdamW; for bitsandbytes'
    8-bit AdamW one byte each with a block absmax (fp32 for tensors below MIN_8BIT_SIZE), plus its two
    256-entry quantisation maps, which every tensor shares (measured: one storage)."""
    if optimizer == "adamw":
        return sum(2 * param_bytes * n for n in numels)
    small = sum(8 * n for n in numels if n < MIN_8BIT_SIZE)
    large = [n for n in numels if n >= MIN_8BIT_SIZE]
    return small + sum(2 * (n + 4 * math.ceil(n / STATE_BLOCK)) for n in large) + (2 * CODE_BYTES if large else 0)


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
    module_cast_bytes: int | None = None  # an engine cast the whole model to this width (DeepSpeed bf16/fp16)

    @property
    def dtype_bytes(self) -> int:
        return self.module_cast_bytes or DTYPE_BYTES[self.spec.model.dtype]

    def cast_module(self, width: int) -> Context:
        """This context after an engine cast every unquantised weight to `width` bytes before placing it."""
        return self if self.quant is not None else replace(self, module_cast_bytes=width)

    @property
    def quant(self):
        return self.spec.model.quantization

    @property
    def kept_bytes(self) -> int:
        """Bytes per unquantised weight (embedding, head, norms, biases): peft's
        prepare_model_for_kbit_training, which the script runs on a quantised base, makes them fp32."""
        return 4 if self.quant is not None else self.dtype_bytes

    @property
    def layer_weight_bytes(self) -> int:
        """One decoder layer's frozen weights as loaded (quantised Linears, norms and biases kept)."""
        arch, kept = self.arch, self.kept_bytes
        total = 2 * arch.hidden_size * kept
        for name, (fan_in, fan_out) in arch.linear_modules().items():
            total += linear_bytes(self.quant, fan_in, fan_out, self.dtype_bytes)
            total += fan_out * kept if arch.has_bias(name) else 0
        return total

    @property
    def embedding_weight_bytes(self) -> int:
        return self.arch.embedding_params() * self.kept_bytes

    @property
    def head_weight_bytes(self) -> int:
        """Final norm and lm_head (never quantised)."""
        return self.arch.head_params() * self.kept_bytes

    @property
    def weight_bytes(self) -> int:
        return self.embedding_weight_bytes + self.arch.num_layers * self.layer_weight_bytes + self.head_weight_bytes

    @property
    def dequant_bytes(self) -> int:
        """The dequantised working copy of the largest Linear during its forward or backward: a transient of
        the layer phase (StepShape.dequant_bytes), never alive beside the loss's logits (measured:
        bench/qlora_memory.py). 8-bit on CPU dequantises to the input dtype, on CUDA to fp16."""
        if self.quant is None:
            return 0
        largest = max(i * o for i, o in self.arch.linear_modules().values())
        if self.quant.bits == 4:
            return largest * DTYPE_BYTES[self.quant.compute_dtype]
        return largest * (4 if self.spec.hardware.accelerator == "cpu" else 2)

    @property
    def targets(self) -> list[str]:
        return resolve_targets(self.spec.lora.target_modules, self.arch)

    def lora_tensors(self, layers: range | None = None) -> list[int]:
        """Elements of every trainable tensor peft adds in `layers` (all by default): A (r x in) and
        B (out x r); DoRA's magnitude (out); AdaLoRA's E (r) beside its A and B."""
        lora, arch = self.spec.lora, self.arch
        chosen = [i for i in arch.lora_layers(lora.layers) if layers is None or i in layers]
        per_layer = []
        for name, (fan_in, fan_out) in arch.linear_modules().items():
            if name not in self.targets:
                continue
            per_layer += [lora.r * fan_in, fan_out * lora.r]
            per_layer += [fan_out] if lora.method == "dora" else []
            per_layer += [lora.r] if lora.method == "adalora" else []
        return per_layer * len(chosen)

    @property
    def lora_params(self) -> int:
        return sum(self.lora_tensors())

    def lora_params_in(self, layers: range) -> int:
        return sum(self.lora_tensors(layers))

    @property
    def adapter_bytes(self) -> int:
        return ADAPTER_BYTES[self.spec.lora.dtype]

    def lora_state_bytes_in(self, layers: range, grads: bool) -> int:
        """A single-process backend's LoRA bytes in `layers`: the adapters in lora.dtype, their gradients
        (when they persist), the optimizer's states and AdaLoRA's importance scores (its allocator keeps
        the score, its moving average and its uncertainty: 3 per element)."""
        a, optimizer = self.adapter_bytes, self.spec.training.optimizer
        allocator = 3 * a if self.spec.lora.method == "adalora" else 0
        tensors = self.lora_tensors(layers)
        return (a + (a if grads else 0) + allocator) * sum(tensors) + optimizer_state_bytes(optimizer, tensors, a)

    def shape(self, adapter_bytes: int, autocast: bool = True) -> StepShape:
        """The step's shape; autocast=False for engines that cast the whole module instead (DeepSpeed)."""
        s = self.spec
        step = dict(self.step)
        cast = step.pop("autocast_bytes", None)
        cast = cast if autocast else None
        return StepShape(**{
            "batch": s.training.micro_batch_size,
            # prepare_model_for_kbit_training makes the embedding fp32: the residual stream is fp32 after it
            "dtype_bytes": 4 if self.quant is not None else self.dtype_bytes,
            "dora": s.lora.method == "dora",
            "int8_inputs": self.quant is not None and self.quant.bits == 8,
            "int8_cpu": s.hardware.accelerator == "cpu",
            "dequant_bytes": self.dequant_bytes,
            "adapter_bytes": adapter_bytes,
            "r": s.lora.r,
            "targets": frozenset(self.targets),
            "lora_layers": frozenset(self.arch.lora_layers(s.lora.layers)),
            "dropout": s.lora.dropout,
            "dropout_mask_bytes": 1 if s.hardware.accelerator == "cuda" else None,
            "autocast_bytes": cast,
            "frozen_linears_cast": cast is not None and self.quant is None and cast != self.dtype_bytes,
            **step,
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
        if self.quant is not None:
            # measured (bench/qlora_memory.py --load): the load's peak RSS exceeds what stays after it by
            # about the largest Linear in the file's dtype; the weights are quantised one at a time
            largest = max(i * o for i, o in arch.linear_modules().values()) * DTYPE_BYTES[stored]
            return file_bytes + processes * largest + runtime, (
                f"{stored} safetensors memory-mapped ({format_bytes(file_bytes)}, shared by the ranks) and "
                f"quantised to {self.quant.bits} bits one weight at a time (the largest Linear's transient per rank)"
            )
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
        """Adapter plus optimizer states per saved checkpoint."""
        every = range(self.arch.num_layers)
        return self.lora_state_bytes_in(every, False) + self.adapter_bytes * self.lora_params


def device_use(ctx: Context, name: str, parts: dict[str, int], buckets: int = 0, note: str = "") -> DeviceUse:
    """A device holding `parts` (tensor bytes by category) plus the runtime overheads they imply."""
    tensors = sum(parts.values())
    return DeviceUse(name, {**parts, **ctx.overheads(tensors, buckets)}, ctx.spec.hardware.device_memory, note)
