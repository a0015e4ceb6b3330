"""The layer-placement memory model: whole decoder layers in contiguous blocks over the node's devices,
the embedding with the first device and the final norm, lm_head and the loss with the last; layers that
fit nowhere are offloaded (CPU or disk) and run on the first device. The layout a plan is computed for
is also the device_map the job loads with (planned_device_map): the plan a user reads is what runs.
"""

from __future__ import annotations

from qcompile.compiler.planner.activations import step_activations
from qcompile.compiler.planner.memory import HOST_PER_PROCESS, TENSOR_KEYS, Context, DeviceUse, HostUse, device_use
from qcompile.schemas.units import format_bytes


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
    arch = ctx.arch
    name = f"gpu {d}" if ctx.spec.hardware.accelerator == "cuda" else f"device {d}"
    if not layers and not first and not last:
        idle = {k: 0 for k in TENSOR_KEYS} | ctx.overheads(0)
        return DeviceUse(name, idle, ctx.spec.hardware.device_memory, "unused")
    weights = len(layers) * ctx.layer_weight_bytes + extra_weights
    weights += ctx.embedding_weight_bytes if first else 0
    weights += ctx.head_weight_bytes if last else 0
    grads = ctx.spec.training.gradient_accumulation_steps > 1
    lora_states = ctx.lora_state_bytes_in(layers, grads)
    acts = step_activations(arch, ctx.shape(ctx.adapter_bytes), layers, first, last)
    parts = {"weights": weights, "lora_states": lora_states, "activations": acts.activations, "logits": acts.logits}
    return device_use(ctx, name, parts)


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
    s, arch = ctx.spec, ctx.arch
    offloaded = range(offload_from, arch.num_layers)
    off_bytes = len(offloaded) * ctx.layer_weight_bytes + (ctx.head_weight_bytes if offloaded else 0)
    on_cpu = off_bytes if s.strategies.offload.params == "cpu" else 0
    load, why = ctx.host_load(1)
    notes = [why]
    if offloaded:
        notes.append(f"{len(offloaded)} layers and the head ({format_bytes(off_bytes)}) offloaded to "
                     f"{s.strategies.offload.params}")
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
    dev = _layer_device(ctx, d, layers, d == 0, d == n - 1 and run_offloaded is None)
    if d == 0 and run_offloaded is not None:
        for key in ("lora_states", "activations", "logits"):
            dev.breakdown[key] += run_offloaded.breakdown[key]
        dev.breakdown["weights"] += max(ctx.layer_weight_bytes, ctx.head_weight_bytes)  # streamed in
        dev.breakdown.update(ctx.overheads(dev.tensor_bytes))
        dev.note = run_offloaded.note
    return dev


def planned_device_map(ctx: Context) -> dict[str, int | str]:
    """The placement naive-model-parallel's plan is computed for, as the transformers device_map the
    job loads with: one source of truth, so the plan a user reads is what runs. GPUs are ints (all
    resident modules are "cpu" on a CPU node); offloaded layers, norm and head are "cpu" or "disk"."""
    spec, arch = ctx.spec, ctx.arch
    blocks, offload_from = naive_layout(ctx)
    cpu_node = spec.hardware.accelerator == "cpu"

    def device(d: int) -> int | str:
        return "cpu" if cpu_node else d

    spill = spec.strategies.offload.params
    device_map: dict[str, int | str] = {"model.embed_tokens": device(0), "model.rotary_emb": device(0)}
    for d, block in enumerate(blocks):
        device_map.update({f"model.layers.{i}": device(d) for i in block})
    device_map.update({f"model.layers.{i}": spill for i in range(offload_from, arch.num_layers)})
    device_map["model.norm"] = spill if offload_from < arch.num_layers else device(len(blocks) - 1)
    device_map["lm_head"] = device(0) if arch.tie_word_embeddings else device_map["model.norm"]
    return device_map
