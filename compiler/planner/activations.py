"""Bytes a LoRA training step keeps alive for backward, walked module by module through one decoder layer.

The walk follows autograd's rule: an op saves tensors only when one of its inputs requires grad, so
frozen layers before the first adapter save nothing, and frozen Linears save only their (frozen) weight.
What each op saves was read off CPU traces (see trace.py) and is checked against them in the tests:

- RMSNorm: an fp32 copy of its input (for pow) and the fp32 rsqrt per token.
- Autocast (the single-process backends' bf16/fp16): every matmul runs in the compute dtype, so q, k, v,
  the attention output and the MLP's tensors are compute-dtype; the residual stream and the norms keep
  the weights' dtype. A frozen Linear whose input needs grad saves its weight for backward: under
  autocast over wider weights that is a compute-dtype copy of it (lm_head's included).
- LoRA module: peft casts its input to the adapter dtype, autocast then to the compute dtype: the
  matmul saves that copy, private to the module whenever a cast made it (fp32 adapters on a bf16 base,
  or any autocast over fp32). Without a cast it is the module's input itself: shared by q, k and v,
  and for o_proj the attention output sdpa already saved. With dropout a mask and the dropped copy
  instead; and lora_A's output for lora_B; under autocast a compute-dtype copy of the adapter weights.
- sdpa: q, k, v after rotary, the output and an fp32 logsumexp per head and token. eager adds the
  b x heads x s x s scores (fp32 softmax output plus its low-precision copy saved by the value matmul)
  and k/v repeated to every head.
- gated MLP: silu's input and output and up's output, in the compute dtype.
- Loss: log-softmax keeps fp32 logits; its backward peaks at 12 bytes x tokens x vocab.
- Non-reentrant checkpointing keeps each layer's input and recomputes one layer during backward
  (recompute_transient: the gradients alive beside it).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import saved as act_saved
from .architecture import Architecture

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj")
MLP_IN_MODULES = ("gate_proj", "up_proj")


@dataclass(frozen=True)
class StepShape:
    """What a training step's memory depends on besides the architecture."""

    batch: int
    seq: int
    dtype_bytes: int  # weights and the residual stream (the load dtype)
    adapter_bytes: int  # 4 for peft's fp32 adapters, or dtype_bytes when the engine casts them
    r: int
    targets: frozenset[str]
    lora_layers: frozenset[int]
    checkpointing: bool
    attention: str = "sdpa"
    dropout: float = 0.0
    dropout_mask_bytes: int | None = 1  # CUDA keeps a bool mask; CPU one in the input dtype (None)
    dora: bool = False  # DoRA saves two out-sized tensors per module for its magnitude (measured on CPU)
    # quant (issue 10): an 8-bit Linear keeps its input in ctx, outside checkpointing's hooks, when it needs
    # grad: CUDA (MatMul8bitLt) an fp16 copy per module; CPU (MatMul8bitFp) the input itself, shared.
    int8_inputs: bool = False
    int8_cpu: bool = False
    dequant_bytes: int = 0  # quant: a 4/8-bit layer's dequantised weight, alive only inside its matmul
    # act: the chunked loss, activation offload and compression (their strategies; effects in saved.py)
    loss_chunk: int | None = None  # tokens per chunk of the chunked loss; None: the standard loss
    fused_loss: bool = False  # CUDA: liger-kernel's fused linear cross-entropy may run instead
    activation_offload: bool = False  # saved tensors in host memory between forward and backward
    compressed_bytes: int | None = None  # bytes per element of a compressed saved tensor; None: uncompressed
    autocast_bytes: int | None = None  # the autocast dtype of the forward (None: no autocast)
    frozen_linears_cast: bool = False  # autocast casts the frozen (unquantised) Linears' weights

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    @property
    def compute_bytes(self) -> int:
        """The dtype of matmul outputs and what attention and the MLP save."""
        return self.autocast_bytes or self.dtype_bytes

    def lora_input(self, input_bytes: int) -> tuple[int, bool]:
        """(bytes per element of the input copy a LoRA module saves, whether a cast made it private)."""
        saved = self.autocast_bytes or self.adapter_bytes
        return saved, not (input_bytes == self.adapter_bytes == saved)


def _lora_saved(shape: StepShape, fan_in: int, input_bytes: int, already_saved: bool, grad_in: bool,
                fan_out: int) -> tuple[int, bool]:
    """Bytes one LoRA module saves; and whether its (uncast) input is saved once it ran. `already_saved`:
    a sibling or sdpa saved this very input tensor."""
    t, a = shape.tokens, shape.adapter_bytes
    saved, private = shape.lora_input(input_bytes)
    small = saved * t * shape.r  # lora_A output, saved by lora_B
    small += 2 * a * t * fan_out if shape.dora else 0
    small += saved * shape.r * (fan_in + fan_out) if shape.autocast_bytes and saved != a else 0  # cast adapters
    if shape.dropout > 0:  # the dropped copy, and the mask only when the input itself needs grad
        mask = (a if shape.dropout_mask_bytes is None else shape.dropout_mask_bytes) if grad_in else 0
        return t * fan_in * (saved + mask) + small, already_saved
    if private:
        return saved * t * fan_in + small, already_saved
    return (0 if already_saved else saved * t * fan_in) + small, True


def _weight_copies(arch: Architecture, shape: StepShape, names: tuple[str, ...], grad_in: bool) -> int:
    """Compute-dtype copies autocast makes of these frozen Linears' weights, kept for backward when
    their input needs grad."""
    if not (grad_in and shape.frozen_linears_cast):
        return 0
    dims = arch.linear_modules()
    return sum(shape.compute_bytes * dims[n][0] * dims[n][1] for n in names)


def _int8_cpu_kept(shape: StepShape, fan_in: int, grad_in: bool, adapted: frozenset[str]) -> int:
    """quant: the input an 8-bit Linear keeps on CPU, unless a same-dtype adapter saved that tensor already."""
    if not (shape.int8_inputs and shape.int8_cpu and grad_in):
        return 0
    if adapted and shape.dropout == 0 and shape.adapter_bytes == shape.dtype_bytes:
        return 0
    return shape.dtype_bytes * shape.tokens * fan_in


def int8_kept_per_layer(arch: Architecture, shape: StepShape) -> int:
    """quant: what every checkpointed layer's 8-bit Linears keep past the checkpoint (inputs need grad)."""
    if not shape.int8_inputs:
        return 0
    h, q, i, t = arch.hidden_size, arch.q_dim, arch.intermediate_size, shape.tokens
    if shape.int8_cpu:  # one input per group: norm, attention output, norm, MLP product
        return shape.dtype_bytes * t * (2 * h + q + i)
    return 2 * t * (5 * h + q + i)  # an fp16 copy per module: q, k, v, o, gate, up, down


def layer_saved_bytes(arch: Architecture, shape: StepShape, index: int, grad_in: bool) -> tuple[int, bool]:
    """Bytes decoder layer `index` saves for backward without checkpointing; and whether its output
    requires grad (given whether its input does)."""
    t, e, c = shape.tokens, shape.dtype_bytes, shape.compute_bytes
    h, i, q, kv = arch.hidden_size, arch.intermediate_size, arch.q_dim, arch.kv_dim
    lora = shape.targets if index in shape.lora_layers else frozenset()
    norm = 4 * t * h + 4 * t
    saved = norm if grad_in else 0

    dims = arch.linear_modules()
    int8 = 2 * t if shape.int8_inputs and not shape.int8_cpu else 0
    shared = False
    grad_qkv = grad_in
    saved += 3 * int8 * h if grad_in else 0
    saved += _weight_copies(arch, shape, ATTENTION_MODULES, grad_in)
    saved += _int8_cpu_kept(shape, h, grad_in, lora & set(ATTENTION_MODULES))
    for name in ATTENTION_MODULES:
        if name in lora:
            extra, shared = _lora_saved(shape, h, e, shared, grad_in, dims[name][1])
            saved += extra
            grad_qkv = True
    if grad_qkv:
        saved += c * t * (2 * q + 2 * kv) + 4 * t * arch.num_heads  # q, k, v, output, logsumexp
        if shape.attention == "eager":
            scores = shape.batch * arch.num_heads * shape.seq * shape.seq
            saved += (4 + c) * scores
            if kv != q:  # repeat_kv copies k and v to every head
                saved += c * t * 2 * (q - kv)
    if "o_proj" in lora:  # sdpa's output is o_proj's input itself; eager's is a transposed copy
        saved += _lora_saved(shape, q, c, shape.attention == "sdpa" and grad_qkv, grad_qkv, h)[0]
    saved += int8 * q if grad_qkv else 0
    saved += _weight_copies(arch, shape, ("o_proj",), grad_qkv)
    saved += _int8_cpu_kept(shape, q, grad_qkv, lora & {"o_proj"})
    grad_mid = grad_qkv or "o_proj" in lora
    if grad_mid:
        saved += norm + 2 * int8 * h
    saved += _weight_copies(arch, shape, MLP_IN_MODULES, grad_mid)
    saved += _int8_cpu_kept(shape, h, grad_mid, lora & set(MLP_IN_MODULES))

    shared = False
    grad_gate = grad_up = grad_mid
    for name in MLP_IN_MODULES:
        if name in lora:
            extra, shared = _lora_saved(shape, h, e, shared, grad_mid, i)
            saved += extra
            grad_gate = grad_gate or name == "gate_proj"
            grad_up = grad_up or name == "up_proj"
    if grad_gate:
        saved += c * t * i  # silu's input
    if grad_gate or grad_up:
        saved += c * t * i * ((1 if grad_up else 0) + (1 if grad_gate else 0))  # mul saves the other side
    if "down_proj" in lora:
        saved += _lora_saved(shape, i, c, False, grad_gate or grad_up, h)[0]
    saved += int8 * i if grad_gate or grad_up else 0
    saved += _weight_copies(arch, shape, ("down_proj",), grad_gate or grad_up)
    saved += _int8_cpu_kept(shape, i, grad_gate or grad_up, lora & {"down_proj"})
    return saved, grad_mid or grad_gate or grad_up or "down_proj" in lora


def recompute_transient(arch: Architecture, shape: StepShape) -> int:
    """What a checkpointed layer's backward holds beside its recomputed saved tensors, at its peak (the
    MLP's backward; fitted to traces, tests/compiler/planner/test_trace.py): the incoming t x h
    gradient and three t x i compute-dtype gradients (down_proj's input, silu's and up's). A LoRA on
    down_proj changes that: sharing its uncast input, the input is freed before the gradients meet
    (one fewer); a private copy adds the gradient's trip through the adapter dtype (the dropout mask's
    product, autocast's cast and the widening back to fp32 weights each keep one more). When the
    checkpoint is fp32 the first norm saves the kept input itself, which max(per_layer) counted."""
    t, c, e, a = shape.tokens, shape.compute_bytes, shape.dtype_bytes, shape.adapter_bytes
    h, i = arch.hidden_size, arch.intermediate_size
    mlp = 3 * c
    if "down_proj" in shape.targets and shape.lora_layers:
        private = shape.lora_input(c)[1]
        dropout = shape.dropout > 0
        if not private:
            mlp -= c
        else:
            mlp += (a if dropout else a - c) + (c if dropout and shape.autocast_bytes else 0) + (c if e != c else 0)
    return mlp * t * i + c * t * h - (4 * t * h if e == 4 else 0)


@dataclass(frozen=True)
class Activations:
    """Peak activation bytes of one device's share of the model, split for the plan's table."""

    activations: int  # saved layer tensors (or checkpointed inputs plus one recompute)
    logits: int  # the loss's fp32 logits and their gradient (zero on devices without the head)
    host: int = 0  # saved tensors kept in host memory (activation offload)


def step_activations(
    arch: Architecture, shape: StepShape, layers: range, has_embedding: bool, has_head: bool
) -> Activations:
    """Activation and logits bytes at this device's peak, for the decoder layers in `layers`."""
    t, e = shape.tokens, shape.dtype_bytes
    # The embedding's output needs no grad; a later device's input does once an adapter came before it.
    grad = not has_embedding and bool(shape.lora_layers) and min(shape.lora_layers) < layers.start
    grad0 = grad  # act
    per_layer = []
    for index in layers:
        saved, grad = layer_saved_bytes(arch, shape, index, grad)
        per_layer.append(saved)
    rope = 2 * t * arch.head_dim * e + 24 * t  # cos/sin shared by every layer; token ids and labels
    if shape.checkpointing:
        kept = len(per_layer) * (e * t * arch.hidden_size + int8_kept_per_layer(arch, shape))
        recompute = max(per_layer, default=0) + recompute_transient(arch, shape)
    else:
        kept = sum(per_layer)
        recompute = 0
    recompute += shape.dequant_bytes if per_layer else 0  # quant: inside a layer, never beside the logits
    head = (4 * t * arch.hidden_size + 4 * t) if (has_head and grad) else 0
    head_copy = 0
    if has_head and grad and shape.autocast_bytes and shape.autocast_bytes != e:  # lm_head's compute-dtype copy
        head_copy = shape.autocast_bytes * arch.vocab_size * arch.hidden_size
    head += head_copy
    logits = 12 * t * arch.vocab_size if has_head else 0
    # act: chunked loss, activation offload and compression (planner/saved.py) ----------------------
    logits = act_saved.loss_bytes(arch, shape, logits) if has_head else 0
    compressed = act_saved.compressed_layers(arch, shape, layers, grad0, layer_saved_bytes) \
        if shape.compressed_bytes else []
    copies = act_saved.weight_copies(arch, shape, layers, grad0, layer_saved_bytes)
    kept, head, recompute, host = act_saved.stored(arch, shape, per_layer, compressed, kept, head, recompute,
                                                   has_head, (copies, head_copy))
    # -------------------------------------------------------------------------------------------------
    # Peak is either the loss's backward (everything kept plus the logits) or, with checkpointing,
    # the recompute of the last layer after the logits are freed.
    at_loss = kept + head + rope + logits
    at_recompute = kept + rope + recompute
    if at_loss >= at_recompute:
        return Activations(activations=kept + head + rope, logits=logits, host=host)
    return Activations(activations=at_recompute, logits=0, host=host)
