"""Ground truth for the analytic planner: trace one real LoRA training step and report its peak.

One step (forward, backward, AdamW step, zero_grad) of a peft-wrapped Qwen2-shaped model runs under a
TorchDispatchMode that counts every live tensor storage; the peak of allocated tensor bytes is what
`torch.cuda.max_memory_allocated` would report on a GPU, without the allocator's rounding.

Small shapes run on real CPU tensors; large ones (`fake=True`) under FakeTensorMode, where no byte is
allocated, so an 80-layer 72B step traces on a laptop. torch, transformers and peft are imported inside
functions only: the planner package itself must stay importable without them.

Why not MemTracker: it registers hooks on every parameter (failing on frozen ones) and keeps per-module
peaks at O(ops x modules); the global peak is all we need, and a storage counter is twenty lines.
"""

from __future__ import annotations

import contextlib
import io
import weakref
from dataclasses import dataclass

from qcompile.backends.naive_mp import NAIVE_MODEL_PARALLEL

from .memory import resolve_targets
from .plan import plan


@dataclass(frozen=True)
class TraceCase:
    """The shape of one traced step; mirrors the spec fields the analytic model reads."""

    model_type: str = "qwen2"
    num_layers: int = 2
    hidden_size: int = 64
    intermediate_size: int = 176
    num_heads: int = 4
    num_kv_heads: int = 2
    vocab_size: int = 1000
    tie_word_embeddings: bool = False
    seq_len: int = 64
    batch: int = 1
    r: int = 8
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    layers: tuple[int, ...] | None = None
    dropout: float = 0.0
    checkpointing: bool = False
    attention: str = "sdpa"
    dtype: str = "bfloat16"
    adapter_dtype: str = "float32"  # peft's default on a bf16 base; "same" = the base dtype (DeepSpeed bf16)
    mixed_precision: str = "no"  # autocast as Trainer runs the forward: "no", "bf16" or "fp16"
    # issue 11's strategies, applied by the generated script's own parts (templates/script/)
    loss: str = "standard"  # or "chunked"
    loss_chunk_size: int = 1024
    activation_offload: bool = False
    activation_compression: str = "none"  # or "int8", "fp8"

    def config_dict(self) -> dict:
        """A config.json for this shape, as resolve_architecture and transformers both read it."""
        return {
            "model_type": self.model_type,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": max(self.seq_len, 128),
            "rms_norm_eps": 1e-6,
            "sliding_window": None,  # Mistral's default window would make sdpa build a mask at long sequence
        }


class _LiveBytes:
    """Counts bytes of live tensor storages seen by the dispatcher; keeps the global peak. Storages made
    inside `on_host()` (activation offload's copies) are host memory: counted apart, with their own peak."""

    def __init__(self) -> None:
        self.current = self.peak = 0
        self.host_current = self.host_peak = 0
        self._host = False
        self._seen: dict[int, tuple[int, bool]] = {}

    def add(self, tensor) -> None:
        import torch

        if not isinstance(tensor, torch.Tensor):
            return
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._seen:
            return
        nbytes = storage.nbytes()
        self._seen[key] = (nbytes, self._host)
        if self._host:
            self.host_current += nbytes
            self.host_peak = max(self.host_peak, self.host_current)
        else:
            self.current += nbytes
            self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        nbytes, host = self._seen.pop(key, (0, False))
        if host:
            self.host_current -= nbytes
        else:
            self.current -= nbytes

    @contextlib.contextmanager
    def on_host(self):
        self._host = True
        try:
            yield
        finally:
            self._host = False


def _counting_mode(counter: _LiveBytes):
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class CountingMode(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for leaf in tree_flatten(out)[0]:
                counter.add(leaf)
            return out

    return CountingMode()


def _script_parts():
    """The generated script's own parts for issue 11's strategies (templates/script/), so that the trace runs
    their code. Importing a part chains it onto the script's STEPS; nothing here runs those steps, and
    the chain is undone so that code calling the parts directly sees the plain steps."""
    from qcompile.templates.script import core

    plain = core.STEPS.add_adapters
    from qcompile.templates.script import chunked_loss, saved_activations

    core.STEPS.add_adapters = plain
    return chunked_loss, saved_activations


def _traced_hooks(counter: _LiveBytes):
    """The script's saved-tensor hooks, except where offloaded tensors travel: a CPU has no separate host,
    so the copy to the host is a copy counted as host memory and the copy back a new "device" tensor, as
    the pinned copy and its transfer back are on a GPU."""
    hooks = _script_parts()[1].SavedTensorHooks

    class TracedHooks(hooks):
        def to_host(self, t):
            with counter.on_host():
                return t.clone()

        def to_device(self, t, device):
            return t.clone()

    return TracedHooks


def _with_strategies(case: TraceCase, model, hooks=None):
    """The peft model as the script's parts leave it: the chunked loss, then the saved-tensor hooks (the
    order the script chains them in, STRATEGIES order). `hooks`: the hooks class (the script's own if None)."""
    if case.loss == "standard" and not case.activation_offload and case.activation_compression == "none":
        return model
    chunked_loss, saved_activations = _script_parts()
    cfg = {"strategies": {"loss": case.loss, "loss_chunk_size": case.loss_chunk_size,
                          "activation_offload": case.activation_offload,
                          "activation_compression": case.activation_compression}}
    with contextlib.redirect_stdout(io.StringIO()):  # the parts log what they do; plan --json prints here
        if case.loss == "chunked":
            model = chunked_loss.with_chunked_loss(model, cfg)
        if case.activation_offload or case.activation_compression != "none":
            model = saved_activations.with_saved_tensor_hooks(model, cfg, hooks or saved_activations.SavedTensorHooks)
    return model


def _build(case: TraceCase, fake_mode=None, device: str = "cpu", hooks=None):
    """The peft model, real on `device`; or, given a FakeTensorMode, built on meta and swapped to fake
    tensors (modules made under FakeTensorMode cannot be moved or cast, which peft and transformers do).
    The spec's strategies are applied last, by the script's parts (`hooks`: see _with_strategies)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**case.config_dict())
    config._attn_implementation = case.attention
    dtype = getattr(torch, case.dtype)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta" if fake_mode else device):
            model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.set_default_dtype(default)
    lora = LoraConfig(
        r=case.r,
        lora_alpha=2 * case.r,
        lora_dropout=case.dropout,
        target_modules=list(case.target_modules),
        layers_to_transform=list(case.layers) if case.layers is not None else None,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora, low_cpu_mem_usage=fake_mode is not None)
    adapter_dtype = dtype if case.adapter_dtype == "same" else getattr(torch, case.adapter_dtype)
    swapped: dict[int, torch.nn.Parameter] = {}  # tied weights (embedding = lm_head) stay one tensor
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            want = adapter_dtype if param.requires_grad else dtype
            if fake_mode is not None:
                if id(param) not in swapped:
                    with fake_mode:
                        data = torch.empty(param.shape, dtype=want, device="cpu")
                    swapped[id(param)] = torch.nn.Parameter(data, requires_grad=param.requires_grad)
                module._parameters[name] = swapped[id(param)]
            elif param.dtype != want:
                param.data = param.data.to(want)
        if fake_mode is not None:
            for name, buf in list(module._buffers.items()):
                if buf is not None:
                    with fake_mode:
                        module._buffers[name] = torch.empty(buf.shape, dtype=buf.dtype, device="cpu")
    if case.checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    model.train()
    return _with_strategies(case, model, hooks)


def _autocast(case: TraceCase, device: str):
    """The forward's autocast as Trainer (accelerate) runs it for bf16/fp16; none for "no"."""
    import torch

    if case.mixed_precision == "no":
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=torch.bfloat16 if case.mixed_precision == "bf16" else torch.float16)


def _real_mask_decision(fake: bool):
    """transformers builds an s x s attention mask whenever a fake tensor makes it think it is being
    traced; the real run skips it for sdpa (causal, nothing padded, not packed). Under fake tensors,
    decide as the real run does: only compiling, exporting or jit tracing count as tracing."""
    from unittest import mock

    if not fake:
        return contextlib.nullcontext()
    from transformers import masking_utils

    real = masking_utils.is_tracing
    stack = contextlib.ExitStack()
    stack.enter_context(mock.patch.object(masking_utils, "is_tracing", lambda tensor=None: real(None)))
    # unpacked rows: the position ids never restart (reading them is a data-dependent op fake tensors refuse)
    stack.enter_context(mock.patch.object(masking_utils, "find_packed_sequence_indices", lambda *a, **k: None))
    return stack


def _step_once(case: TraceCase, model, optimizer, ids, device: str) -> None:
    """One optimizer step as the generated script's Trainer runs it: the forward (and the model's own
    loss) under autocast, no attention mask (an all-ones mask is dropped for sdpa), backward outside it."""
    with _autocast(case, device):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@dataclass(frozen=True)
class TracedPeak:
    """One traced step's peaks: tensor bytes on the device, and in host memory (activation offload)."""

    device: int
    host: int = 0


def trace_step(case: TraceCase, fake: bool = False) -> TracedPeak:
    """Peak allocated tensor bytes during one LoRA training step of `case` (after a warm-up step), on the
    device and, for activation offload, in host memory."""
    import torch

    torch.manual_seed(0)
    fake_mode = None
    if fake:
        from torch._subclasses.fake_tensor import FakeTensorMode

        fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    counter = _LiveBytes()
    model = _build(case, fake_mode, hooks=_traced_hooks(counter) if case.activation_offload else None)
    with fake_mode or contextlib.nullcontext(), _real_mask_decision(fake_mode is not None):
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-4, foreach=False)
        ids = torch.randint(0, case.vocab_size, (case.batch, case.seq_len))
        _step_once(case, model, optimizer, ids, "cpu")  # optimizer states exist from here on
        for tensor in [*model.parameters(), *model.buffers(), ids]:
            counter.add(tensor)
        for state in optimizer.state.values():
            for value in state.values():
                counter.add(value)
        with _counting_mode(counter):
            _step_once(case, model, optimizer, ids, "cpu")
        return TracedPeak(counter.peak, counter.host_peak)


def trace_step_peak(case: TraceCase, fake: bool = False) -> int:
    """Peak allocated tensor bytes on the device during one LoRA training step of `case`."""
    return trace_step(case, fake).device


def live_tensor_bytes(counter: _LiveBytes, device: str = "cpu") -> None:
    """Adds every tensor alive in the process on `device` (an engine's flat buffers and partitions
    included, which no model or optimizer attribute lists)."""
    import gc

    import torch

    gc.collect()
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and obj.device.type == device:
            try:
                counter.add(obj)
            except Exception:  # noqa: BLE001 - objects the dispatcher cannot count hold no storage we need
                pass


def measured_step_peak(step, device: str) -> int:
    """Peak bytes of tensors during `step()` (run once before, so optimizer states exist): on CUDA
    torch.cuda.max_memory_allocated; on CPU every live tensor plus what the dispatcher sees allocated."""
    import torch

    step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    counter = _LiveBytes()
    live_tensor_bytes(counter, device)
    with _counting_mode(counter):
        step()
    return counter.peak


def real_step_peak(case: TraceCase, device: str) -> int:
    """One real step of `case` on `device` as the single-process backends run it (autocast, fp32
    adapters, torch AdamW), measured by measured_step_peak."""
    import torch

    torch.manual_seed(0)
    model = _build(case, None, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, foreach=False)
    ids = torch.randint(0, case.vocab_size, (case.batch, case.seq_len), device=device)
    return measured_step_peak(lambda: _step_once(case, model, optimizer, ids, device), device)


def case_for_spec(spec, arch) -> TraceCase:
    """The TraceCase of a spec's own model shape (one device, the whole model, one micro-batch)."""
    return TraceCase(
        model_type=arch.model_type,
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_heads=arch.num_heads,
        num_kv_heads=arch.num_kv_heads,
        vocab_size=arch.vocab_size,
        tie_word_embeddings=arch.tie_word_embeddings,
        seq_len=spec.strategies.max_seq_length,
        batch=spec.training.micro_batch_size,
        r=spec.lora.r,
        target_modules=tuple(resolve_targets(spec.lora.target_modules, arch)),
        layers=tuple(spec.lora.layers) if spec.lora.layers is not None else None,
        dropout=spec.lora.dropout,
        checkpointing=spec.strategies.gradient_checkpointing,
        attention=spec.strategies.attention,
        dtype=spec.model.dtype,
        adapter_dtype=spec.lora.dtype,
        mixed_precision=spec.strategies.mixed_precision,
        loss=spec.strategies.loss,
        loss_chunk_size=spec.strategies.loss_chunk_size,
        activation_offload=spec.strategies.activation_offload,
        activation_compression=spec.strategies.activation_compression,
    )


def single_device_spec(spec):
    """The spec as the tracer runs it: one CPU device holding everything (no offload), no
    accumulation; adapters, autocast, checkpointing and attention as the spec sets them."""
    hardware = spec.hardware.model_copy(update={"accelerator": "cpu", "nodes": 1, "devices_per_node": 1})
    training = spec.training.model_copy(update={"gradient_accumulation_steps": 1})
    offload = spec.strategies.offload.model_copy(update={"params": "none"})
    strategies = spec.strategies.model_copy(update={"offload": offload})
    return spec.model_copy(update={"hardware": hardware, "training": training, "strategies": strategies})


def _traced_step(spec) -> dict:
    """StepShape fields the trace sets over the CPU plan's: it moves offloaded activations off its "device"
    as a CUDA job does (on a CPU node the job, and its plan, move nothing)."""
    return {"activation_offload": True} if spec.strategies.activation_offload else {}


def analytic_peak(spec, arch) -> int:
    """The planner's tensor peak for what trace_spec_peak runs: one device holding everything."""
    return plan(single_device_spec(spec), arch, NAIVE_MODEL_PARALLEL, _traced_step(spec)).devices[0].tensor_bytes


def analytic(spec, arch) -> TracedPeak:
    """The planner's figures for what trace_step runs: the device's tensor peak, and the host bytes of
    offloaded activations."""
    from . import saved
    from .plan import memory_context

    one = single_device_spec(spec)
    ctx = memory_context(one, arch)
    ctx.step.update(_traced_step(spec))
    return TracedPeak(analytic_peak(spec, arch), saved.host_bytes(ctx, NAIVE_MODEL_PARALLEL)[0])


def trace_spec(spec, arch) -> tuple[TracedPeak, TracedPeak]:
    """(traced, analytic) peaks of one step of the spec's model shape, under FakeTensorMode."""
    return trace_step(case_for_spec(spec, arch), fake=True), analytic(spec, arch)


def trace_spec_peak(spec, arch) -> tuple[int, int]:
    """(traced, analytic) peak device tensor bytes of one step of the spec's model shape, under FakeTensorMode."""
    traced, planned = trace_spec(spec, arch)
    return traced.device, planned.device
