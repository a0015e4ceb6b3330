"""Where each backend keeps the bytes: one function per backend kind in PLACEMENTS.

Each returns per-device breakdowns (bytes by category) and the node's host RAM at load and in training.
Adding a backend is one function and one table row. Assumptions, stated once:

- DeepSpeed (ZeRO-2/3) casts the whole module, adapters included, to the bf16/fp16 compute dtype and
  keeps an fp32 master copy, Adam moments and fp32 gradients of the LoRA weights partitioned over the
  data-parallel ranks. The HF/accelerate paths keep peft's fp32 adapters with torch AdamW (16 bytes per
  LoRA parameter with gradients, which persist across micro-batches only when accumulating).
- Layer-splitting backends place the decoder layers in contiguous blocks, the embedding with the first
  device and the final norm, lm_head and the loss with the last; offloaded layers (and then the head)
  run on the first. naive_layout is also the map naive-model-parallel loads with (planned_device_map).
- A bf16 checkpoint loaded as bf16 with low_cpu_mem_usage is memory-mapped: the ranks of a node share
  one copy in the page cache. Any dtype conversion (or a load without low_cpu_mem_usage) gives each
  rank a private copy, about 1.8x its size at peak (bench/planner_accuracy.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .activations import StepShape, step_activations
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
        return StepShape(
            batch=s.training.micro_batch_size,
            seq=s.strategies.max_seq_length,
            dtype_bytes=self.dtype_bytes,
            adapter_bytes=adapter_bytes,
            r=s.lora.r,
            targets=frozenset(s.lora.target_modules),
            lora_layers=frozenset(self.arch.lora_layers(s.lora.layers)),
            checkpointing=s.strategies.gradient_checkpointing,
            attention=s.strategies.attention,
            dropout=s.lora.dropout,
            dropout_mask_bytes=1 if s.hardware.accelerator == "cuda" else None,
        )

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
                f"{_gib(file_bytes)} copy in the page cache"
            )
        private = self.weight_bytes if private_bytes_per_rank is None else private_bytes_per_rank
        why = "low_cpu_mem_usage is off" if not s.strategies.low_cpu_mem_usage else (
            f"loading {stored} weights as {s.model.dtype} converts them"
        )
        per_rank = int(PRIVATE_LOAD_FACTOR * private)
        return processes * per_rank + runtime, (
            f"{why}: each of {processes} rank(s) holds a private copy, about {_gib(per_rank)} at peak "
            f"({processes} x {_gib(per_rank)} = {_gib(processes * per_rank)})"
        )

    def checkpoint_disk(self) -> int:
        return 16 * self.lora_params  # fp32 adapter plus optimizer states per saved checkpoint


def _gib(n: int) -> str:
    from qcompile.schemas.units import format_bytes

    return format_bytes(n)


def _device(ctx: Context, name: str, parts: dict[str, int], buckets: int = 0, note: str = "") -> DeviceUse:
    tensors = sum(parts.values())
    return DeviceUse(name, {**parts, **ctx.overheads(tensors, buckets)}, ctx.spec.hardware.device_memory, note)


# --- DeepSpeed ZeRO ---------------------------------------------------------------------------------


def _zero(ctx: Context, stage: int) -> tuple[list[DeviceUse], HostUse]:
    s, arch = ctx.spec, ctx.arch
    ranks, local = s.hardware.world_size, s.hardware.devices_per_node
    compute = ctx.dtype_bytes if s.strategies.mixed_precision == "no" else 2
    p = ctx.lora_params
    offload_opt = s.strategies.offload.optimizer == "cpu"
    offload_params = stage == 3 and s.strategies.offload.params != "none"
    master = (4 + 8 + 4) * p // ranks  # fp32 master, Adam moments, fp32 gradient partition
    lora_states = compute * p // (ranks if stage == 3 else 1) + compute * p // ranks
    lora_states += 0 if offload_opt else master
    layer = arch.layer_params() * ctx.dtype_bytes
    working_set = _gathered_elements(s.backend, arch, ranks) * ctx.dtype_bytes
    if stage == 2:
        weights, note = ctx.weight_bytes, "full copy of the frozen weights on every rank"
    elif offload_params:
        weights, note = working_set, "weights on CPU; gathered layer by layer"
    else:
        weights, note = ctx.weight_bytes // ranks + working_set, f"1/{ranks} of the weights plus the gathered working set"
    reduce_bucket, gather_bucket, overlap = _zero_buckets(s.backend, stage, arch)
    buckets = compute * (min(reduce_bucket, p) * (2 if overlap else 1) + min(gather_bucket, p))
    acts = step_activations(arch, ctx.shape(compute), range(arch.num_layers), True, True)
    parts = {"weights": weights, "lora_states": lora_states, "activations": acts.activations, "logits": acts.logits}
    devices = [_device(ctx, f"rank {r}", parts, buckets, note) for r in range(ranks)]

    runtime = local * HOST_PER_PROCESS[s.hardware.accelerator]
    if stage == 3:  # zero.Init: each rank converts and keeps only its shard while loading
        load, why = ctx.host_load(local, private_bytes_per_rank=ctx.weight_bytes // ranks + layer)
    else:
        load, why = ctx.host_load(local)
    train = runtime + (master * local if offload_opt else 0)
    train += ctx.weight_bytes * local // ranks if offload_params else 0
    notes = [why]
    if offload_opt:
        notes.append(f"optimizer states offloaded to CPU: {_gib(master * local)} per node")
    if offload_params:
        notes.append(f"frozen weights offloaded to CPU: {_gib(ctx.weight_bytes * local // ranks)} per node")
    host = HostUse(load, max(train, runtime), s.hardware.host_memory, ctx.checkpoint_disk(), notes)
    return devices, host


def _zero3_options(backend):
    from qcompile.schemas.backend import Zero3Backend

    return backend if isinstance(backend, Zero3Backend) else Zero3Backend(kind="deepspeed-zero3")


def _gathered_elements(backend, arch: Architecture, ranks: int) -> int:
    """Elements ZeRO-3 holds gathered beside the rank's own shard: up to stage3_max_live_parameters,
    or every parameter reused within stage3_max_reuse_distance (at least the largest single tensor,
    usually the embedding or lm_head), plus one prefetch bucket; never more than the whole model
    (traced: tiny models stay wholly gathered). One rank's shard is the whole tensor: no copy."""
    from qcompile.backends.zero3 import stage3_sizes

    if ranks == 1:
        return 0
    options = _zero3_options(backend)
    largest = max(arch.embedding_params(), arch.head_params(), arch.hidden_size * arch.intermediate_size)
    kept = max(options.max_live_parameters, options.max_reuse_distance, largest)
    return min(kept + stage3_sizes(options, arch.hidden_size)["prefetch"], arch.num_params())


def _zero_buckets(backend, stage: int, arch: Architecture) -> tuple[int, int, bool]:
    """(reduce bucket, gather bucket, overlap) in elements, as the emitted ds_config.json sets them
    (the spec's options when its backend is this stage, else the defaults)."""
    overlap = getattr(backend, "overlap_comm", True)
    if stage == 3:
        from qcompile.backends.zero3 import stage3_sizes

        sizes = stage3_sizes(_zero3_options(backend), arch.hidden_size)
        return sizes["reduce"], sizes["prefetch"], overlap
    return getattr(backend, "reduce_bucket_size", 50_000_000), getattr(backend, "allgather_bucket_size", 50_000_000), overlap


def zero2(ctx: Context) -> tuple[list[DeviceUse], HostUse]:
    return _zero(ctx, 2)


def zero3(ctx: Context) -> tuple[list[DeviceUse], HostUse]:
    return _zero(ctx, 3)


# --- layer placement (naive model parallel, accelerate offload) ---------------------------------------


def split_layers(num_layers: int, devices: int) -> list[range]:
    """Contiguous blocks, the earlier devices taking the remainder (the last also holds the head)."""
    base, extra = divmod(num_layers, devices)
    blocks, start = [], 0
    for d in range(devices):
        size = base + (1 if d < extra else 0)
        blocks.append(range(start, start + size))
        start += size
    return blocks


def _layer_device(ctx: Context, d: int, layers: range, first: bool, last: bool, extra_weights: int = 0) -> DeviceUse:
    arch, e = ctx.arch, ctx.dtype_bytes
    name = f"gpu {d}" if ctx.spec.hardware.accelerator == "cuda" else f"device {d}"
    if not layers and not first and not last:
        return DeviceUse(name, {k: 0 for k in TENSOR_KEYS} | ctx.overheads(0), ctx.spec.hardware.device_memory, "unused")
    weights = len(layers) * arch.layer_params() * e + extra_weights
    weights += arch.embedding_params() * e if first else 0
    weights += arch.head_params() * e if last else 0
    grads = 4 if ctx.spec.training.gradient_accumulation_steps > 1 else 0
    lora_states = (4 + 8 + grads) * ctx.lora_params_in(layers)
    acts = step_activations(arch, ctx.shape(4), layers, first, last)
    parts = {"weights": weights, "lora_states": lora_states, "activations": acts.activations, "logits": acts.logits}
    return _device(ctx, name, parts)


def fill_then_offload(ctx: Context, n: int) -> tuple[list[range], int]:
    """The most layers that stay resident: for each first offloaded layer k from none down, whole
    layers [0, k) fill devices 0..n-1 in order, device 0 already paying for running layers k.. and the
    head; k is lowered only when offload.params allows. Returns the resident blocks and k (num_layers:
    nothing offloaded). When nothing fits, the plan shows the overflow (without offload, all of it on
    the last device)."""
    num_layers = ctx.arch.num_layers
    boundaries = range(num_layers, -1, -1) if ctx.spec.strategies.offload.params != "none" else [num_layers]
    for k in boundaries:
        blocks, placed = _fill(ctx, n, k)
        if placed == k and all(d.peak <= d.budget for d in _offload_devices(ctx, blocks, k)):
            return blocks, k
    if k == num_layers:
        blocks[-1] = range(blocks[-1].start, num_layers)
    return blocks, k


def _fill(ctx: Context, n: int, k: int) -> tuple[list[range], int]:
    """Greedy contiguous blocks of layers [0, k), each device taking layers while it fits."""
    run_offloaded, budget = _offloaded_run(ctx, k), ctx.spec.hardware.device_memory
    blocks, start = [], 0
    for d in range(n):
        end = start
        while end < k and _placed_device(ctx, d, range(start, end + 1), n, run_offloaded).peak <= budget:
            end += 1
        blocks.append(range(start, end))
        start = end
    return blocks, start


def naive_layout(ctx: Context) -> tuple[list[range], int]:
    """The even split when every device fits it (balanced devices, no streaming); else fill then
    offload. planned_device_map turns this into the device_map the job loads with."""
    n = min(ctx.spec.hardware.devices_per_node, ctx.arch.num_layers)
    even = split_layers(ctx.arch.num_layers, n)
    if all(d.peak <= d.budget for d in _offload_devices(ctx, even, ctx.arch.num_layers)):
        return even, ctx.arch.num_layers
    return fill_then_offload(ctx, n)


def naive_model_parallel(ctx: Context) -> tuple[list[DeviceUse], HostUse]:
    blocks, offload_from = naive_layout(ctx)
    return _offload_devices(ctx, blocks, offload_from), _layer_host(ctx, offload_from)


def accelerate_offload(ctx: Context) -> tuple[list[DeviceUse], HostUse]:
    blocks, offload_from = fill_then_offload(ctx, ctx.spec.hardware.devices_per_node)
    return _offload_devices(ctx, blocks, offload_from), _layer_host(ctx, offload_from)


def _layer_host(ctx: Context, offload_from: int) -> HostUse:
    """Host RAM and disk of a layer-placing backend: one process, plus the offloaded layers and head."""
    s, arch, e = ctx.spec, ctx.arch, ctx.dtype_bytes
    offloaded = range(offload_from, arch.num_layers)
    off_bytes = len(offloaded) * arch.layer_params() * e + (arch.head_params() * e if offloaded else 0)
    on_cpu = off_bytes if s.strategies.offload.params == "cpu" else 0
    load, why = ctx.host_load(1)
    notes = [why]
    if offloaded:
        notes.append(f"{len(offloaded)} layers and the head ({_gib(off_bytes)}) offloaded to {s.strategies.offload.params}")
    runtime = HOST_PER_PROCESS[s.hardware.accelerator]
    disk = ctx.checkpoint_disk() + (off_bytes if s.strategies.offload.params == "disk" else 0)
    return HostUse(load + on_cpu, runtime + on_cpu, s.hardware.host_memory, disk, notes)


def _offload_devices(ctx: Context, blocks: list[range], offload_from: int) -> list[DeviceUse]:
    run_offloaded = _offloaded_run(ctx, offload_from)
    return [_placed_device(ctx, d, blk, len(blocks), run_offloaded) for d, blk in enumerate(blocks)]


def _offloaded_run(ctx: Context, offload_from: int) -> DeviceUse | None:
    """What running layers offload_from.. and the head costs (on device 0); None when none is offloaded."""
    if offload_from >= ctx.arch.num_layers:
        return None
    last = ctx.arch.num_layers - 1
    run = _layer_device(ctx, 0, range(offload_from, last + 1), False, True)
    run.note = f"runs layers {offload_from}-{last} and the head from {ctx.spec.strategies.offload.params}"
    return run


def _placed_device(ctx: Context, d: int, layers: range, n: int, run_offloaded: DeviceUse | None) -> DeviceUse:
    """Device d of n holding `layers`: the embedding on the first, the head on the last unless it is
    offloaded; offloaded layers and the head execute on the first."""
    arch, e = ctx.arch, ctx.dtype_bytes
    dev = _layer_device(ctx, d, layers, d == 0, d == n - 1 and run_offloaded is None)
    if d == 0 and run_offloaded is not None:
        for key in ("lora_states", "activations", "logits"):
            dev.breakdown[key] += run_offloaded.breakdown[key]
        dev.breakdown["weights"] += max(arch.layer_params(), arch.head_params()) * e  # streamed in
        dev.breakdown.update(ctx.overheads(dev.tensor_bytes))
        dev.note = run_offloaded.note
    return dev


PLACEMENTS = {
    "deepspeed-zero2": zero2,
    "deepspeed-zero3": zero3,
    "naive-model-parallel": naive_model_parallel,
    "accelerate-offload": accelerate_offload,
}
# Fastest first: data parallel over every GPU beats one GPU at a time, which beats streaming from CPU.
SPEED_ORDER = ("deepspeed-zero2", "deepspeed-zero3", "naive-model-parallel", "accelerate-offload")
