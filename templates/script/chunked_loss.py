"""strategies.loss chunked: the causal-LM cross-entropy loss_chunk_size tokens at a time. The model's
forward with labels runs the decoder, then ChunkedLinearCrossEntropy calls the head on one chunk of the
hidden states at a time and takes that chunk's gradient at once, so neither the full [tokens, vocab]
logits nor their gradient ever exist. On CUDA liger-kernel's fused linear cross-entropy runs instead when
it is installed and the head's weight is on the hidden states' device. The loss is normalised like
transformers' (mean over labelled tokens, or sum / num_items_in_batch under gradient accumulation)."""

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from .core import STEPS, log

IGNORE_INDEX = -100


def unchanged(t):
    return t


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """sum over tokens of cross_entropy(head(hidden), labels); the head's trainable parameters (if any)
    are inputs too, so their gradients flow. Gradients are taken chunk by chunk in forward and scaled by
    the incoming gradient in backward."""

    @staticmethod
    def forward(ctx, hidden, labels, head, chunk, *params):
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.zeros_like(hidden) if hidden.requires_grad else None
        grad_params = [torch.zeros_like(p) for p in params]
        for start in range(0, hidden.shape[0], chunk):
            piece = hidden[start:start + chunk].detach().requires_grad_(hidden.requires_grad)
            # no name holds the fp32 logits (log-softmax keeps only its output); the chunk's own graph keeps its
            # tensors where they are: its backward runs right here, not after an offload's round trip
            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(unchanged, unchanged):
                loss = torch.nn.functional.cross_entropy(head(piece).float(), labels[start:start + chunk].to(
                    hidden.device), ignore_index=IGNORE_INDEX, reduction="sum")
            wanted = ([piece] if hidden.requires_grad else []) + list(params)
            if wanted and loss.requires_grad:
                grads = torch.autograd.grad(loss, wanted, allow_unused=True)
                if hidden.requires_grad:
                    grad_hidden[start:start + chunk] = grads[0]
                    grads = grads[1:]
                for acc, g in zip(grad_params, grads, strict=True):
                    if g is not None:
                        acc += g
            total += loss.detach().to(total.device)
            del loss
        ctx.grad_hidden, ctx.grad_params = grad_hidden, grad_params  # not through saved-tensor hooks
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_params = ctx.grad_hidden, ctx.grad_params
        ctx.grad_hidden, ctx.grad_params = None, []  # freed now, not when the loss (and its graph) is
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_total.to(grad_hidden.dtype)
        return (grad_hidden, None, None, None, *(g * grad_total.to(g.dtype) for g in grad_params))


def fused_kernel(hidden, head):
    """liger-kernel's fused linear cross-entropy, when it can run here (CUDA, installed, plain Linear head
    on the hidden states' device); None otherwise."""
    weight = getattr(head, "weight", None)
    if hidden.device.type != "cuda" or weight is None or weight.device != hidden.device or weight.requires_grad \
            or weight.dtype != hidden.dtype:
        return None
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
    except ImportError:
        return None
    return liger_fused_linear_cross_entropy


def causal_lm_loss(hidden, head, labels, chunk: int, num_items_in_batch=None):
    """transformers' causal-LM loss (labels shifted left, -100 ignored) computed chunk by chunk."""
    shifted = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1)
    flat = hidden.reshape(-1, hidden.shape[-1])
    fused = fused_kernel(flat, head)
    if fused is not None:
        total = fused(flat, head.weight, shifted.to(flat.device), bias=head.bias, ignore_index=IGNORE_INDEX,
                      reduction="sum")
    else:
        params = [p for p in head.parameters() if p.requires_grad]
        total = ChunkedLinearCrossEntropy.apply(flat, shifted, head, chunk, *params)
    if num_items_in_batch is None:
        return total / (shifted != IGNORE_INDEX).sum().clamp_min(1).to(total.device)
    return total / torch.as_tensor(num_items_in_batch, device=total.device)


def with_chunked_loss(model, cfg: dict):
    """The peft model with a forward that, given labels, runs the decoder and the chunked loss."""
    causal, chunk = model.get_base_model(), cfg["strategies"]["loss_chunk_size"]
    plain = model.forward

    def forward(input_ids=None, attention_mask=None, labels=None, num_items_in_batch=None, **kwargs):
        if labels is None:
            return plain(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        kwargs.pop("return_dict", None)
        hidden = causal.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)[0]
        loss = causal_lm_loss(hidden, causal.get_output_embeddings(), labels, chunk, num_items_in_batch)
        return CausalLMOutputWithPast(loss=loss)

    model.forward = forward
    log(f"loss: chunked, {chunk} tokens per chunk")
    return model


add_adapters_before_chunked_loss = STEPS.add_adapters


def add_adapters_with_chunked_loss(model, cfg: dict):
    return with_chunked_loss(add_adapters_before_chunked_loss(model, cfg), cfg)


STEPS.add_adapters = add_adapters_with_chunked_loss
