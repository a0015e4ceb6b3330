"""Slowdown and peak memory of each activation/logits strategy against the standard step, measured in
the same run on CPU, printed as ratios; and the gradient error of activation compression.

    python examples/make_tiny_model.py && python bench/strategy_cost.py [--repeats 3] [--slice]

Shapes: the tiny example model (its steps measure framework overhead more than training) and a
compute-bound one (hidden 512, 8 layers, seq 512, vocabulary 32,000). Each step is a real LoRA
forward+backward (fp32, sdpa, adapters on q/v/down) through the generated script's own parts
(templates/script/chunked_loss.py, saved_activations.py). Timing: the variants run interleaved, each
repeat in the same order, and each variant's best step is compared with the standard step's best.
Peak: live tensor bytes counted by trace.py's storage counter in a separate, untimed step. On a CPU
node activation offload keeps the tensors where they are, so its peak ratio there is 1 by design; its
time ratio is the cost of the hooks only (the copy to pinned memory is a GPU cost). `--slice` adds the
gradient error of compression on a full-width 2-layer slice of Qwen1.5-7B (hidden 4096, intermediate
11008, 32 heads; seq 128, a 2,048-token vocabulary: the head is not compressed)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

VARIANTS = [  # name, checkpointing, script-part config
    ("standard", False, {}),
    ("chunked loss", False, {"loss": "chunked", "loss_chunk_size": 128}),  # below the 512-token step
    ("activation offload", False, {"activation_offload": True}),
    ("compression int8", False, {"activation_compression": "int8"}),
    ("compression fp8", False, {"activation_compression": "fp8"}),
    ("checkpointing", True, {}),
    ("checkpointing + int8", True, {"activation_compression": "int8"}),
]


def parts():
    from qcompile.templates.script import core

    plain = core.STEPS.add_adapters
    from qcompile.templates.script import chunked_loss, saved_activations

    core.STEPS.add_adapters = plain
    return chunked_loss, saved_activations


def build(config, checkpointing: bool, strategies: dict):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    chunked_loss, saved_activations = parts()
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    if checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                                            init_lora_weights=False))
    model.train()
    cfg = {"accelerator": "cpu", "strategies": {"loss": "standard", "loss_chunk_size": 1024,
                                                 "activation_offload": False, "activation_compression": "none",
                                                 **strategies}}
    if cfg["strategies"]["loss"] == "chunked":
        model = chunked_loss.with_chunked_loss(model, cfg)
    if cfg["strategies"]["activation_offload"] or cfg["strategies"]["activation_compression"] != "none":
        model = saved_activations.with_saved_tensor_hooks(model, cfg)
    return model


def step(model, ids):
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def peak_bytes(model, ids) -> int:
    from qcompile.compiler.planner.trace import _counting_mode, _LiveBytes

    counter = _LiveBytes()
    for p in model.parameters():
        counter.add(p)
    with _counting_mode(counter):
        step(model, ids)
    return counter.peak


def measure(name, config, seq, repeats):
    import torch

    torch.manual_seed(1)
    ids = torch.randint(0, config.vocab_size, (1, seq))
    models = {v: build(config, ckpt, s) for v, ckpt, s in VARIANTS}
    best = {v: float("inf") for v in models}
    for model in models.values():
        step(model, ids)  # warm-up
    for _ in range(repeats):
        for v, model in models.items():
            start = time.perf_counter()
            step(model, ids)
            best[v] = min(best[v], time.perf_counter() - start)
    peaks = {v: peak_bytes(model, ids) for v, model in models.items()}
    print(f"\n{name} (seq {seq}, best of {repeats}; standard {best['standard']:.3f} s/step, "
          f"peak {peaks['standard'] / 2**20:.1f} MiB)")
    print(f"{'variant':24} {'s/step':>8} {'time x':>7} {'peak MiB':>9} {'peak x':>7}")
    for v in models:
        print(f"{v:24} {best[v]:8.3f} {best[v] / best['standard']:7.2f} {peaks[v] / 2**20:9.1f} "
              f"{peaks[v] / peaks['standard']:7.2f}", flush=True)


def gradient_error(name, config, seq):
    import torch

    torch.manual_seed(1)
    ids = torch.randint(0, config.vocab_size, (1, seq))
    for ckpt in (False, True):
        reference = step(build(config, ckpt, {}), ids)
        for kind in ("int8", "fp8"):
            grads = step(build(config, ckpt, {"activation_compression": kind}), ids)
            num = sum((grads[n] - g).pow(2).sum() for n, g in reference.items())
            rel = float((num / sum(g.pow(2).sum() for g in reference.values())).sqrt())
            print(f"{name}: {kind} checkpointing={'on' if ckpt else 'off'}: relative gradient error "
                  f"(L2 over all adapter gradients) {rel:.2e}", flush=True)


def main() -> None:
    from transformers import AutoConfig, Qwen2Config

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slice", action="store_true")
    parser.add_argument("--shapes", default="tiny,compute", help="comma-separated: tiny, compute (or none)")
    parser.add_argument("--variants", default=",".join(v for v, _, _ in VARIANTS),
                        help="comma-separated subset of: " + ", ".join(v for v, _, _ in VARIANTS))
    parser.add_argument("--no-error", action="store_true", help="skip the tiny model's gradient error")
    args = parser.parse_args()
    VARIANTS[:] = [v for v in VARIANTS if v[0] == "standard" or v[0] in args.variants.split(",")]
    tiny = AutoConfig.from_pretrained(REPO / "examples" / "models" / "tiny-qwen2")
    compute = Qwen2Config(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
                          num_key_value_heads=8, vocab_size=32000, max_position_embeddings=1024)
    shapes = args.shapes.split(",")
    if "tiny" in shapes:
        measure("tiny model", tiny, 64, args.repeats)
    if "compute" in shapes:
        measure("compute-bound (hidden 512, 8 layers)", compute, 512, args.repeats)
    if not args.no_error:
        gradient_error("tiny model", tiny, 64)
    if args.slice:
        qwen7b_slice = Qwen2Config(hidden_size=4096, intermediate_size=11008, num_hidden_layers=2,
                                   num_attention_heads=32, num_key_value_heads=32, vocab_size=2048,
                                   max_position_embeddings=4096)
        gradient_error("Qwen1.5-7B width, 2 layers", qwen7b_slice, 128)


if __name__ == "__main__":
    main()
