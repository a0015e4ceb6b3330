"""The chunked loss and the saved-tensor hooks (templates/script/chunked_loss.py, saved_activations.py),
run in-process on the tiny model: the chunked loss equals transformers' loss and gives the same adapter
gradients; offload is exact; compression is close, with checkpointing on and off."""

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from qcompile.templates.script import core  # noqa: E402

_plain_add = core.STEPS.add_adapters
from qcompile.templates.script import chunked_loss, saved_activations  # noqa: E402

core.STEPS.add_adapters = _plain_add  # importing the parts chains them onto STEPS; these tests call them directly


def peft_model(model_dir, checkpointing: bool):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    model = get_peft_model(base, config)
    model.train()
    return model


def batch():
    torch.manual_seed(1)
    ids = torch.randint(0, 200, (2, 37))
    labels = ids.clone()
    labels[0, :5] = -100
    return ids, labels


def step(model, **extra):
    ids, labels = batch()
    model.zero_grad()
    loss = model(input_ids=ids, labels=labels, **extra).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def cfg(**strategies):
    base = {"loss_chunk_size": 7, "activation_offload": False, "activation_compression": "none"}
    return {"strategies": {**base, **strategies}, "accelerator": "cpu"}


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("items", [None, 50])
def test_chunked_loss_equals_the_standard_loss_and_gradients(model_dir, checkpointing, items):
    model = peft_model(model_dir, checkpointing)
    extra = {} if items is None else {"num_items_in_batch": torch.tensor(items)}
    standard, standard_grads = step(model, **extra)
    chunked, chunked_grads = step(chunked_loss.with_chunked_loss(model, cfg()), **extra)
    assert abs(chunked.item() - standard.item()) <= 1e-5 * abs(standard.item())
    for name, grad in standard_grads.items():
        assert torch.allclose(chunked_grads[name], grad, rtol=1e-4, atol=1e-7), name


def test_chunked_loss_passes_gradients_to_a_trainable_head(model_dir):
    model = peft_model(model_dir, False)
    model.get_base_model().lm_head.weight.requires_grad_(True)
    _, standard_grads = step(model)
    _, chunked_grads = step(chunked_loss.with_chunked_loss(model, cfg()))
    head = "base_model.model.lm_head.weight"
    assert torch.allclose(chunked_grads[head], standard_grads[head], rtol=1e-4, atol=1e-7)


def relative_error(grads, reference) -> float:
    num = sum((grads[n] - g).pow(2).sum() for n, g in reference.items())
    return float((num / sum(g.pow(2).sum() for g in reference.values())).sqrt())


@pytest.mark.parametrize("checkpointing", [False, True])
def test_offload_is_exact_and_compression_is_close(model_dir, checkpointing):
    model = peft_model(model_dir, checkpointing)
    loss, reference = step(model)
    offloaded = saved_activations.with_saved_tensor_hooks(copy.deepcopy(model), cfg(activation_offload=True))
    assert step(offloaded)[1].keys() == reference.keys()
    assert relative_error(step(offloaded)[1], reference) == 0.0
    for kind, bound in (("int8", 0.05), ("fp8", 0.1)):
        compressed = saved_activations.with_saved_tensor_hooks(copy.deepcopy(model),
                                                               cfg(activation_compression=kind))
        hooks_loss, grads = step(compressed)
        assert hooks_loss == loss  # forward is unchanged: only what backward reads is compressed
        error = relative_error(grads, reference)
        assert 0 < error < bound, (kind, error)


def test_compression_stores_fewer_bytes(model_dir):
    hooks = saved_activations.SavedTensorHooks(torch.nn.Linear(4, 4), "int8", False)
    x = torch.randn(64, 128)
    codes, scale = hooks.pack(x)[2]
    assert codes.dtype == torch.int8 and scale.shape == (64, 1)
    assert (hooks.unpack(hooks.pack(x)) - x).abs().max() <= x.abs().max() / 127
    weight = torch.nn.Parameter(torch.randn(64, 128))
    assert hooks.pack(weight) is weight and hooks.pack(weight.t()) is not None


def test_an_activation_shaped_like_a_weight_is_stored_and_a_weight_copy_is_not():
    """Autocast's copy of a frozen weight stays as it is; tokens x hidden saved as a 2-D view of the 3-D
    activation is compressed even when the sequence length equals a projection's width."""
    hooks = saved_activations.SavedTensorHooks(torch.nn.Linear(128, 64), "int8", False)
    copy_ = torch.randn(64, 128).to(torch.bfloat16)
    assert hooks.pack(copy_) is copy_ and hooks.pack(copy_.t()) is not None and hooks.keep(copy_.t())
    activation = torch.randn(1, 64, 128).view(64, 128)
    assert not hooks.keep(activation) and hooks.pack(activation)[2][0].dtype == torch.int8


@pytest.mark.parametrize("checkpointing", [False, True])
def test_the_plan_counts_the_bytes_compression_stores(checkpointing):
    """Every tensor the hooks store in one real step (codes and scales, each stored tensor once) against
    the planner's compressed layers and final norm: within 2 %."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Qwen2Config

    from qcompile.compiler.planner.activations import StepShape, step_activations
    from qcompile.compiler.planner.architecture import Architecture

    config = Qwen2Config(hidden_size=256, intermediate_size=688, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, vocab_size=1024, max_position_embeddings=512, tie_word_embeddings=False)
    targets, seq = ["q_proj", "v_proj", "down_proj"], 128
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    if checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=targets))
    model.train()
    hooks = saved_activations.SavedTensorHooks(model, "int8", False)
    stored, pack = {}, hooks.pack

    def counting(t):
        out = pack(t)
        if not isinstance(out, torch.Tensor):
            stored[id(out)] = (out, sum(s.nbytes for s in out[2]))
        return out

    hooks.pack = counting
    saved_activations.wrap_forward(model.get_base_model().model, hooks)
    ids = torch.randint(0, 1024, (1, seq))
    model(input_ids=ids, labels=ids).loss.backward()
    measured = sum(n for _, n in stored.values())

    arch = Architecture.from_config(config.to_dict(), "test")
    shape = StepShape(batch=1, seq=seq, dtype_bytes=4, adapter_bytes=4, r=8, targets=frozenset(targets),
                      lora_layers=frozenset({0, 1}), checkpointing=checkpointing, compressed_bytes=1)
    from qcompile.compiler.planner import saved
    from qcompile.compiler.planner.activations import layer_saved_bytes

    kept = (2 * (seq * 256 + saved.SCALE_BYTES * seq) if checkpointing
            else sum(saved.compressed_layers(arch, shape, range(2), False, layer_saved_bytes)))
    head = seq * 256 + saved.SCALE_BYTES * seq  # the final norm's input (its rsqrt is kept as it is)
    assert abs(measured - (kept + head)) <= 0.02 * measured, (measured, kept + head)
    assert step_activations(arch, shape, range(2), True, True).activations > 0
