"""strategies.activation_offload and activation_compression: saved-tensor hooks. Offload copies each
tensor autograd saves for backward to (pinned, on CUDA) host memory and back when backward needs it; it
wraps the whole forward, the loss included. Compression stores each tensor the decoder saves as int8 or
fp8 (e4m3) with one fp32 scale per row of its last dimension; it wraps only the decoder, so the head and
the loss stay exact. Checkpointing composes: the non-reentrant checkpoint saves each layer's input through
these hooks and its recompute runs in backward, outside them. Frozen weights (and views of them, and
autocast's copies, 2-D tensors of a parameter's shape) are left alone: they are not activations. A tensor
that several ops save (a norm's input, a LoRA input shared by q/k/v) is stored once per forward."""

import weakref

import torch

from .core import STEPS, log

FP8_MAX = 448.0  # largest float8_e4m3fn
SMALLEST = 1024  # elements: smaller tensors are kept as they are


class SavedTensorHooks:
    """pack/unpack for torch.autograd.graph.saved_tensors_hooks: compress (None, "int8", "fp8"), then
    offload (True: to host memory)."""

    def __init__(self, model, compression, offload: bool):
        self.compression, self.offload = compression, offload
        self.weight_shapes = set()
        for p in model.parameters():
            self.weight_shapes |= {tuple(p.shape), tuple(reversed(p.shape))} if p.dim() == 2 else set()
        self.packed = 0  # tensors stored compressed or offloaded (read by the tests)
        self.seen = {}  # tensor view -> (weak reference to its storage, what was stored), this forward only

    def keep(self, t) -> bool:
        if isinstance(t, torch.nn.Parameter) or isinstance(t._base, torch.nn.Parameter):
            return True
        small = t.numel() < SMALLEST or t.dim() == 0 or t.shape[-1] < 16  # a per-row scale would not pay
        # autocast's weight copy: a 2-D tensor of a weight's shape (or a view of one); an activation of the same
        # shape (tokens x hidden when the sequence is some projection's width) is a view of a 3-D tensor
        base = t if t._base is None else t._base
        return not t.is_floating_point() or small or (base.dim() == 2 and tuple(base.shape) in self.weight_shapes)

    def pack(self, t):
        if self.keep(t):
            return t
        storage = t.untyped_storage()  # one Python object per live storage: its weak reference dies with it
        key = (id(storage), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype, t._version)
        earlier = self.seen.get(key)
        if earlier is not None and earlier[0]() is storage:
            return earlier[1]
        self.packed += 1
        stored = compress(t, self.compression) if self.compression else (t,)
        if self.offload:
            stored = tuple(self.to_host(s) for s in stored)
        packed = (t.device, t.dtype, stored)
        self.seen[key] = (weakref.ref(storage), packed)
        return packed

    def unpack(self, packed):
        if isinstance(packed, torch.Tensor):
            return packed
        device, dtype, stored = packed
        stored = tuple(self.to_device(s, device) for s in stored)
        return decompress(stored, dtype) if self.compression else stored[0]

    # Where offloaded tensors travel; qcompile's tracer (compiler/planner/trace.py) replaces these two to tell a
    # CPU trace's host copies from its "device" tensors.
    def to_host(self, t):
        return to_host(t)

    def to_device(self, t, device):
        return t.to(device, non_blocking=True)

    def context(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)


def to_host(t):
    if t.device.type == "cpu":
        return t
    host = torch.empty(t.size(), dtype=t.dtype, layout=t.layout, pin_memory=torch.cuda.is_available())
    host.copy_(t, non_blocking=True)
    return host


def compress(t, kind: str):
    """(codes, scale): int8 codes or fp8 values and one fp32 scale per row of the last dimension."""
    x = t.detach().float()
    top = FP8_MAX if kind == "fp8" else 127.0
    scale = (x.abs().amax(dim=-1, keepdim=True) / top).clamp_min(torch.finfo(torch.float32).tiny)
    if kind == "fp8":
        return (x / scale).to(torch.float8_e4m3fn), scale
    return (x / scale).round_().clamp_(-127, 127).to(torch.int8), scale


def decompress(stored, dtype):
    codes, scale = stored
    return (codes.float() * scale).to(dtype)


def wrap_forward(module, hooks: SavedTensorHooks) -> None:
    """Run module's forward inside the hooks (an instance attribute, so engines that call it see it)."""
    plain = module.forward

    def forward(*args, **kwargs):
        try:
            with hooks.context():
                return plain(*args, **kwargs)
        finally:
            hooks.seen.clear()  # what was stored now lives only in the graph

    module.forward = forward


def with_saved_tensor_hooks(model, cfg: dict, hooks=SavedTensorHooks):
    """The model with the spec's hooks around its forward (offload) and its decoder's (compression)."""
    strategies = cfg["strategies"]
    compression = None if strategies["activation_compression"] == "none" else strategies["activation_compression"]
    offload = strategies["activation_offload"]  # on a CPU node the copies are the tensors themselves
    if offload:
        wrap_forward(model, hooks(model, None, True))
    if compression:
        wrap_forward(model.get_base_model().model, hooks(model, compression, offload))
    log(f"saved activations: compression {compression or 'none'}, offload {'on' if offload else 'off'}")
    return model


add_adapters_before_saved_hooks = STEPS.add_adapters


def add_adapters_with_saved_hooks(model, cfg: dict):
    return with_saved_tensor_hooks(add_adapters_before_saved_hooks(model, cfg), cfg)


STEPS.add_adapters = add_adapters_with_saved_hooks
