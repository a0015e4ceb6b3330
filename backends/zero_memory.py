"""The ZeRO memory model: what each rank and each node hold under DeepSpeed stage 2 or 3.

DeepSpeed casts the whole module (fp32 weights too), adapters included, to the bf16/fp16 compute dtype
before placing it, runs no autocast, and keeps an fp32 master copy, Adam moments and fp32 gradients of
the LoRA weights partitioned over the data-parallel ranks. Stage 2 replicates the frozen base on every
rank; stage 3 shards it and gathers a working set. The bucket and threshold sizes are the ones the
emitted ds_config.json sets (stage3_sizes).
"""

from __future__ import annotations

from qcompile.compiler.planner.activations import step_activations
from qcompile.compiler.planner.architecture import Architecture
from qcompile.compiler.planner.memory import (
    HOST_PER_PROCESS,
    Context,
    DeviceUse,
    HostUse,
    device_use,
    optimizer_state_bytes,
)
from qcompile.schemas.units import format_bytes

# DeepSpeed's own defaults, used when the architecture (hence hidden_size) is unknown.
DEEPSPEED_DEFAULTS = {"reduce": 500_000_000, "prefetch": 50_000_000, "persistence": 100_000}


def stage3_sizes(options, hidden_size: int | None) -> dict[str, int]:
    """Bucket and threshold sizes in elements: the spec's, else what HF's "auto" would derive from
    hidden_size (buckets of one hidden x hidden matrix; vectors shorter than ten rows stay whole)."""
    derived = DEEPSPEED_DEFAULTS if hidden_size is None else {
        "reduce": hidden_size * hidden_size,
        "prefetch": int(0.9 * hidden_size * hidden_size),
        "persistence": 10 * hidden_size,
    }
    return {
        "reduce": options.reduce_bucket_size or derived["reduce"],
        "prefetch": options.prefetch_bucket_size or derived["prefetch"],
        "persistence": derived["persistence"] if options.param_persistence_threshold is None
        else options.param_persistence_threshold,
    }


def gathered_elements(options, arch: Architecture, ranks: int) -> int:
    """Elements ZeRO-3 holds gathered beside the rank's own shard: up to stage3_max_live_parameters,
    or every parameter reused within stage3_max_reuse_distance (at least the largest single tensor,
    usually the embedding or lm_head), plus one prefetch bucket; never more than the whole model
    (traced: tiny models stay wholly gathered). One rank's shard is the whole tensor: no copy."""
    if ranks == 1:
        return 0
    largest = max(arch.embedding_params(), arch.head_params(), arch.hidden_size * arch.intermediate_size)
    kept = max(options.max_live_parameters, options.max_reuse_distance, largest)
    return min(kept + stage3_sizes(options, arch.hidden_size)["prefetch"], arch.num_params())


def buckets(options, stage: int, arch: Architecture) -> tuple[int, int, bool]:
    """(reduce bucket, gather bucket, overlap) in elements, as the emitted ds_config.json sets them."""
    if stage == 3:
        sizes = stage3_sizes(options, arch.hidden_size)
        return sizes["reduce"], sizes["prefetch"], options.overlap_comm
    return options.reduce_bucket_size, options.allgather_bucket_size, options.overlap_comm


def zero_placement(ctx: Context, stage: int) -> tuple[list[DeviceUse], HostUse]:
    s, arch = ctx.spec, ctx.arch
    options = s.backend
    ranks, local = s.hardware.world_size, s.hardware.devices_per_node
    compute = ctx.dtype_bytes if s.strategies.mixed_precision == "no" else 2
    ctx = ctx.cast_module(compute)  # the bf16/fp16 engine casts the parameters before moving them to the device
    p = ctx.lora_params
    offload_opt = s.strategies.offload.optimizer == "cpu"
    offload_params = stage == 3 and s.strategies.offload.params != "none"
    # fp32 master and gradient partitions, and the optimizer's states of that one flat partition
    master = (4 + 4) * p // ranks + optimizer_state_bytes(s.training.optimizer, [p // ranks], 4)
    lora_states = compute * p // (ranks if stage == 3 else 1) + compute * p // ranks
    lora_states += 0 if offload_opt else master
    layer = ctx.layer_weight_bytes
    working_set = (gathered_elements(options, arch, ranks) if stage == 3 else 0) * ctx.dtype_bytes
    if stage == 2:
        weights, note = ctx.weight_bytes, "full copy of the frozen weights on every rank"
        if ctx.quant is not None:
            note = f"full {ctx.quant.bits}-bit copy of the frozen weights on every rank"
    elif offload_params:
        weights, note = working_set, "weights on CPU; gathered layer by layer"
    else:
        weights = ctx.weight_bytes // ranks + working_set
        note = f"1/{ranks} of the weights plus the gathered working set"
    reduce_bucket, gather_bucket, overlap = buckets(options, stage, arch)
    # ZeRO-2's contiguous gradient buffers are allocated whole, however few the trainable parameters
    # (stage_1_and_2.setup_buckets; bench/planner_accuracy.py --gpu --dry measured both)
    reduce = reduce_bucket if stage == 2 else min(reduce_bucket, p)
    comm = compute * (reduce * (2 if overlap else 1) + min(gather_bucket, p))
    acts = step_activations(arch, ctx.shape(compute, autocast=False), range(arch.num_layers), True, True)
    parts = {"weights": weights, "lora_states": lora_states, "activations": acts.activations, "logits": acts.logits}
    devices = [device_use(ctx, f"rank {r}", parts, comm, note) for r in range(ranks)]

    runtime = local * HOST_PER_PROCESS[s.hardware.accelerator]
    if stage == 3:  # zero.Init: each rank converts and keeps only its shard while loading
        load, why = ctx.host_load(local, private_bytes_per_rank=ctx.weight_bytes // ranks + layer)
    else:
        load, why = ctx.host_load(local)
    train = runtime + (master * local if offload_opt else 0)
    train += ctx.weight_bytes * local // ranks if offload_params else 0
    notes = [why]
    if offload_opt:
        notes.append(f"optimizer states offloaded to CPU: {format_bytes(master * local)} per node")
    if offload_params:
        notes.append(f"frozen weights offloaded to CPU: {format_bytes(ctx.weight_bytes * local // ranks)} per node")
    host = HostUse(load, max(train, runtime), s.hardware.host_memory, ctx.checkpoint_disk(), notes)
    return devices, host
