"""What the chunked loss, activation offload and activation compression change in a step's activation
and logits bytes (strategies/loss.py, activation_offload.py, activation_compression.py). activations.py
calls these from one marked block; this module imports nothing from it, so the walk stays in one place.

- Chunked loss (torch path): one chunk's logits at a time (the same 12 bytes per token and vocabulary
  entry as the standard loss, for loss_chunk tokens: log-softmax's fp32 output, its gradient and the
  logits' gradient) beside the hidden states and their gradient, which each chunk writes as it goes
  (the loss's gradients are taken in its forward, where the hidden states are still alive).
  liger-kernel (CUDA): a chunk of 2**k tokens sized so chunk x vocab ~ tokens x hidden, its logits and
  their in-place gradient in the compute dtype, plus the hidden states' gradient and an fp32 loss per
  token. The plan counts the larger, because which runs is decided on the GPU node.
- Compression: each saved tensor stored in `compressed_bytes` per element plus one fp32 scale per row
  (a row is one token); the fp32 norm copies are counted at 4 bytes before and 1 after, like the others.
  With checkpointing the compressed tensors are the kept layer inputs; the recompute is full precision.
- Offload: what compression (or nothing) stored goes to host memory, the standard loss's log-softmax
  output included. The device keeps, at its peak, one layer's tensors brought back for backward (or, with
  checkpointing, the recompute and its input), and the loss's logits (brought back; their gradient is
  made on the device).
"""

from __future__ import annotations

import math
from dataclasses import replace

from qcompile.schemas.units import format_bytes

SCALE_BYTES = 4  # one fp32 scale per row of a compressed tensor
ROWS_PER_LAYER = 12  # saved tensors per decoder layer a compressed step keeps a per-token scale for


def loss_bytes(arch, shape, standard: int) -> int:
    """The logits term of the device holding the head."""
    if shape.loss_chunk is None:
        return standard
    t, v, h, e = shape.tokens, arch.vocab_size, arch.hidden_size, shape.dtype_bytes
    torch_path = 12 * min(shape.loss_chunk, t) * v + 2 * e * t * h  # the hidden states and their gradient
    if not shape.fused_loss:
        return torch_path
    chunk = min(2 ** math.ceil(math.log2(max(math.ceil(t / math.ceil(v / h)), 1))), t)
    return max(torch_path, 2 * e * chunk * v + e * t * h + 4 * t)


def compressed_layers(arch, shape, layers: range, grad: bool, walk) -> list[int]:
    """Each layer's saved bytes when every saved tensor is stored in shape.compressed_bytes per element
    (`walk` is activations.layer_saved_bytes, run with every dtype at that size; its two RMSNorms' fp32
    copies are written as 4 bytes there and corrected here)."""
    c, t, h = shape.compressed_bytes, shape.tokens, arch.hidden_size
    small = replace(shape, dtype_bytes=c, adapter_bytes=c, dropout_mask_bytes=c, compressed_bytes=None,
                    autocast_bytes=c if shape.autocast_bytes else None, frozen_linears_cast=False)
    uncast = replace(shape, frozen_linears_cast=False)
    out = []
    for index in layers:
        lora = shape.targets if index in shape.lora_layers else frozenset()
        norms = int(grad) + int(grad or bool(lora & {"q_proj", "k_proj", "v_proj", "o_proj"}))
        # autocast's copies of frozen weights are skipped by the hooks: they stay at the compute width
        copies = walk(arch, shape, index, grad)[0] - walk(arch, uncast, index, grad)[0]
        saved, grad = walk(arch, small, index, grad)
        out.append(saved + copies - norms * (4 - c) * t * h + SCALE_BYTES * t * ROWS_PER_LAYER)
    return out


def weight_copies(arch, shape, layers: range, grad: bool, walk) -> int:
    """Autocast's compute-dtype copies of frozen weights the layers keep for backward without checkpointing
    (`walk` is activations.layer_saved_bytes): the hooks leave them alone, so they stay on the device."""
    if not shape.frozen_linears_cast or shape.checkpointing:
        return 0
    uncast, total = replace(shape, frozen_linears_cast=False), 0
    for index in layers:
        saved, after = walk(arch, shape, index, grad)
        total += saved - walk(arch, uncast, index, grad)[0]
        grad = after
    return total


def stored(arch, shape, per_layer: list[int], compressed: list[int], kept: int, head: int,
           recompute: int, has_head: bool, copies: tuple[int, int]) -> tuple[int, int, int, int]:
    """(kept on the device, head on the device, recompute peak, bytes in host memory) for this device.
    `copies`: autocast's weight copies in the layers (see weight_copies) and lm_head's, which stay on
    the device. Offload also moves what the standard loss saves (log-softmax's fp32 output, 4 bytes per
    token and vocabulary entry; it comes back for the loss's backward, where the device's logits term
    counts it); the chunked loss saves nothing (it takes its gradients in forward)."""
    t, h, e = shape.tokens, arch.hidden_size, shape.dtype_bytes
    layer_copies, head_copy = copies
    if shape.compressed_bytes is not None:
        if shape.checkpointing:
            kept = len(per_layer) * (shape.compressed_bytes * t * h + SCALE_BYTES * t)
        else:
            kept = sum(compressed)
        if head:  # the final norm's input (its fp32 rsqrt per token is not worth a per-row scale)
            head = shape.compressed_bytes * t * h + SCALE_BYTES * t + 4 * t + head_copy
    if not shape.activation_offload:
        return kept, head, recompute, 0
    log_probs = 4 * t * arch.vocab_size if has_head and shape.loss_chunk is None else 0
    host = kept + head + log_probs - layer_copies - head_copy
    if shape.checkpointing:  # the recompute of one layer and its input brought back
        return 0, head_copy, recompute + e * t * h, host
    back = max(compressed or per_layer, default=0)  # one layer's tensors back on the device in its backward
    return layer_copies, head_copy, back, host


def host_bytes(ctx, backend) -> tuple[int, str]:
    """Host memory one node adds for offloaded activations: each of its processes runs every layer and
    keeps what it saved (the ranks of a layer-splitting job are one process); and the note that says so."""
    if not ctx.step.get("activation_offload"):
        return 0, ""
    from .activations import step_activations  # activations imports this module

    per_process = step_activations(ctx.arch, ctx.shape(ctx.adapter_bytes), range(ctx.arch.num_layers),
                                   True, True).host
    processes = backend.processes(ctx.spec)
    return processes * per_process, (f"saved activations offloaded to host memory: {processes} process(es) x "
                                         f"{format_bytes(per_process)}")
