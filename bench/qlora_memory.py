"""Planner against a real training step for each quantised-base and lean-adapter option.

Each option runs in its own process, the way the generated script builds the model: the base loaded
through bitsandbytes (real 4-bit/8-bit layers on CPU), prepare_model_for_kbit_training, the peft
variant, the chosen optimizer, gradient clipping as Trainer does. Two steps warm the optimizer up; the
third is measured as a real allocation peak, not a tensor count:

    measured = bytes of every live tensor storage before the step (weights, quantisation state,
               adapters, optimizer states, the batch)
             + the step's peak resident-memory rise (VmHWM reset through /proc/self/clear_refs)

glibc is told to serve every block of 64 KiB or more with mmap (MALLOC_MMAP_THRESHOLD_), so freed
tensors leave the resident set at once and the rise is the step's own peak, transients inside
bitsandbytes' kernels included. The planner's figure is the single-device tensor peak (weights, LoRA
states, activations, logits; no fragmentation slack) of the same spec.

    python bench/qlora_memory.py            # tiny and mid-sized models, every option
    python bench/qlora_memory.py --mid-only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY_SPEC = ROOT / "examples" / "naive-mp-cpu.yaml"
MiB = 2**20
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
Q4 = {"bits": 4, "compute_dtype": "float32"}
# option name -> spec changes on top of SHAPE's; each is one real step and one plan
OPTIONS = {
    "lora": {},
    "4bit-nf4": {"model.quantization": Q4},
    "4bit-nf4-bf16": {"model.quantization": {"bits": 4, "compute_dtype": "bfloat16"}},
    "4bit-fp4-nodq": {"model.quantization": {**Q4, "type": "fp4", "double_quant": False}},
    "8bit": {"model.quantization": {"bits": 8}},
    "4bit+adamw_8bit": {"model.quantization": Q4, "training.optimizer": "adamw_8bit"},
    "4bit+all-linear": {"model.quantization": Q4, "lora.target_modules": "all-linear"},
    "dora": {"lora.method": "dora"},
    "4bit+dora": {"model.quantization": Q4, "lora.method": "dora"},
    "rslora": {"lora.method": "rslora"},
    "adalora": {"lora.method": "adalora", "lora.target_r": 4},
    "4bit+adalora": {"model.quantization": Q4, "lora.method": "adalora", "lora.target_r": 4},
    "bf16-adapters": {"lora.dtype": "bfloat16"},
}
# model shapes: (hidden, intermediate, layers, heads, kv heads, vocab), and the step's (batch, seq, checkpointing)
MODELS = {
    "tiny": ((256, 704, 2, 4, 2, 2048), (2, 128, False)),
    "mid": ((768, 2048, 3, 12, 4, 8192), (1, 384, True)),
}


def make_model(folder: Path, dims) -> Path:
    """A random Qwen2 model saved as float32 safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    hidden, inter, layers, heads, kv, vocab = dims
    config = Qwen2Config(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab,
                         max_position_embeddings=4096, tie_word_embeddings=False)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
    return folder


def spec_changes(model_dir: Path, step, option: str) -> dict:
    batch, seq, checkpointing = step
    changes = {"model.name": str(model_dir), "model.dtype": "float32", "lora.layers": None, "lora.r": 8,
               "lora.dropout": 0.0, "lora.target_modules": ATTENTION, "training.micro_batch_size": batch,
               "strategies.max_seq_length": seq, "strategies.gradient_checkpointing": checkpointing,
               "strategies.offload": {"optimizer": "none", "params": "none"}}
    return {**changes, **OPTIONS[option]}


def planned(model_dir: Path, step, option: str) -> dict:
    """The planner's single-device tensor peak for the option, by category."""
    sys.path.insert(0, str(ROOT))
    from qcompile.backends import get_backend
    from qcompile.compiler.planner.plan import plan
    from qcompile.compiler.planner.trace import single_device_spec
    from tests.compiler.planner.conftest import context, spec_from

    spec = spec_from(TINY_SPEC, **spec_changes(model_dir, step, option))
    arch = context(spec, TINY_SPEC.parent).arch
    device = plan(single_device_spec(spec), arch, get_backend("naive-model-parallel")).devices[0]
    return {k: device.breakdown[k] for k in ("weights", "lora_states", "activations", "logits")}


def measure(model_dir: Path, step, options: list[str], fresh: bool = True) -> dict[str, dict]:
    """Each option's measured step (see the module docstring): each in a fresh process, or all in one
    (faster: the rise is read from each step's own start, and freed blocks of 64 KiB or more have left)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0",
           "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    out = {}
    for group in ([[o] for o in options] if fresh else [options]):
        argv = [sys.executable, __file__, "--worker", json.dumps([str(model_dir), step, [OPTIONS[o] for o in group]])]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"{group}: {done.stderr[-3000:]}")
        out |= dict(zip(group, json.loads(done.stdout.strip().splitlines()[-1]), strict=True))
    return out


# ---------------------------------------------------------------- the worker (one option, one process)


def _status(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0


def storages(tensors) -> dict[int, int]:
    """Distinct storages behind `tensors` and their bitsandbytes state: {data_ptr: bytes}."""
    import torch

    seen = {}
    for tensor in tensors:
        extra = [getattr(tensor, name, None) for name in ("SCB", "CB")]
        state = getattr(tensor, "quant_state", None)
        if state is not None:
            extra += [state.absmax, state.code, state.offset]
            extra += [state.state2.absmax, state.state2.code] if state.nested else []
        for t in (tensor, *extra):
            if torch.is_tensor(t) and t.device.type == "cpu":
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return seen


def build(model_dir: str, step, changes: dict):
    """The model and optimizer as the generated script builds them (templates/script)."""
    import torch
    from peft import AdaLoraConfig, LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    batch, seq, checkpointing = step
    quant = changes.get("model.quantization")
    kwargs = {"dtype": torch.float32, "attn_implementation": "sdpa"}
    if quant is not None:
        if quant["bits"] == 8:
            config = BitsAndBytesConfig(load_in_8bit=True)
        else:
            config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant.get("type", "nf4"),
                                        bnb_4bit_use_double_quant=quant.get("double_quant", True),
                                        bnb_4bit_compute_dtype=getattr(torch, quant["compute_dtype"]))
        kwargs |= {"quantization_config": config, "device_map": {"": "cpu"}}
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if quant is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    targets = changes.get("lora.target_modules", ATTENTION)
    method = changes.get("lora.method", "lora")
    if method == "adalora":
        config = AdaLoraConfig(init_r=8, target_r=changes["lora.target_r"], total_step=100, tinit=0, tfinal=10,
                               deltaT=1, lora_alpha=16, target_modules=targets, task_type="CAUSAL_LM")
    else:
        config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets, use_dora=method == "dora",
                            use_rslora=method == "rslora", task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    if changes.get("lora.dtype") == "bfloat16":
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.to(torch.bfloat16)
    if checkpointing:
        model.enable_input_require_grads()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if changes.get("training.optimizer") == "adamw_8bit":
        import bitsandbytes as bnb

        optimizer = bnb.optim.AdamW8bit(params, lr=1e-4)
    else:
        optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
    torch.manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (batch, seq))
    return model, optimizer, params, ids, method


def worker(model_dir: str, step, options: list[dict]) -> list[dict]:
    import gc

    import torch

    torch.set_num_threads(1)
    results = []
    for changes in options:
        results.append(measure_step(model_dir, step, changes))
        gc.collect()
    return results


def measure_step(model_dir: str, step, changes: dict) -> dict:
    import gc

    import torch

    model, optimizer, params, ids, method = build(model_dir, step, changes)

    def one_step(index: int):
        model(input_ids=ids, labels=ids).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if method == "adalora":
            model.base_model.update_and_allocate(index)
        optimizer.zero_grad(set_to_none=True)

    one_step(1)
    one_step(2)
    gc.collect()
    live = [*model.parameters(), *model.buffers(), ids]
    live += [t for state in optimizer.state.values() for t in state.values()]
    if method == "adalora":
        allocator = model.base_model.rankallocator
        live += [t for scores in (allocator.ipt, allocator.exp_avg_ipt, allocator.exp_avg_unc) for t in scores.values()]
    before = sum(storages(live).values())
    rss = _status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark
    one_step(3)
    rise = _status("VmHWM:") - rss
    return {"live_before": before, "step_rise": rise, "measured": before + rise}


def _cached_bytes(path: Path) -> int:
    """Bytes of `path` in the page cache (util-linux fincore)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)], capture_output=True,
                         text=True, check=True)
    return int(out.stdout.split()[0])


def load_worker(model_dir: str, quant: dict) -> dict:
    """Host memory of the script's load path for a quantised base: a warm-up load first (bitsandbytes'
    library and modules are a one-off runtime cost), the file dropped from the page cache, then the
    measured load: its peak resident rise, less the file pages it maps, plus the file's pages that
    the load brought into the page cache (mapped or not: host RAM either way)."""
    import gc

    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    torch.set_num_threads(1)
    if quant["bits"] == 8:
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=torch.float32)

    def load():
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, quantization_config=config,
                                                    device_map={"": "cpu"}, attn_implementation="sdpa")

    del_model = load()
    del del_model
    gc.collect()
    file = Path(model_dir) / "model.safetensors"
    fd = os.open(file, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    rss, mapped = _status("VmRSS:"), _status("RssFile:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    model = load()
    peak, after = _status("VmHWM:"), _status("VmRSS:")
    cached = _cached_bytes(file)  # all of it is host RAM now (pages still mapped from the warm-up included)
    mapped = _status("RssFile:") - mapped
    kept = sum(storages([*model.parameters(), *model.buffers()]).values())
    return {"load_rise": peak - rss - mapped + cached, "rss_rise": peak - rss, "cached": cached, "mapped": mapped,
            "transient": peak - after, "weights": kept}


def planned_load(model_dir: Path, quant: dict) -> dict:
    """The plan's host RAM at load without the per-process runtime, and its quantised weights (which on a
    CPU device live in the same RAM)."""
    sys.path.insert(0, str(ROOT))
    from qcompile.compiler.planner.memory import HOST_PER_PROCESS
    from qcompile.compiler.planner.plan import memory_context
    from tests.compiler.planner.conftest import context, spec_from

    spec = spec_from(TINY_SPEC, **{**spec_changes(model_dir, (1, 64, False), "lora"), "model.quantization": quant})
    ctx = memory_context(spec, context(spec, TINY_SPEC.parent).arch)
    load = ctx.host_load(1)[0] - HOST_PER_PROCESS["cpu"]
    # on a CPU device the quantised Linears live in host RAM too; the fp32 embedding, head and norms are
    # views of the fp32 file's pages, already counted in the file
    kept = ctx.embedding_weight_bytes + ctx.head_weight_bytes + ctx.arch.num_layers * 2 * ctx.arch.hidden_size * 4
    return {"host_load": load, "transient": load - ctx.arch.num_params() * 4, "weights": ctx.weight_bytes - kept}


def compare_load(name: str = "mid", bits=(4, 8)) -> list[dict]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0", "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        model_dir = make_model(Path(folder) / name, MODELS[name][0])
        for quant in ({"bits": b} for b in bits):
            argv = [sys.executable, __file__, "--load-worker", json.dumps([str(model_dir), quant])]
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-3000:])
            real = json.loads(done.stdout.strip().splitlines()[-1])
            plan = planned_load(model_dir, quant)
            total = plan["host_load"] + plan["weights"]
            rows.append({"bits": quant["bits"], "planned": total, **real, "plan": plan,
                         "file": (model_dir / "model.safetensors").stat().st_size,
                         "ratio": total / real["load_rise"]})
    return rows


def compare(models=("tiny", "mid"), options=None, fresh: bool = True) -> list[dict]:
    """Rows of (model, option, planned, measured, ratio) for the chosen models and options."""
    rows = []
    options = list(options or OPTIONS)
    with tempfile.TemporaryDirectory() as folder:
        for name in models:
            dims, step = MODELS[name]
            model_dir = make_model(Path(folder) / name, dims)
            real = measure(model_dir, step, options, fresh)
            for option in options:
                plan = planned(model_dir, step, option)
                total = sum(plan.values())
                rows.append({"model": name, "option": option, "planned": total, **real[option], "plan": plan,
                             "ratio": total / real[option]["measured"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--load-worker", help=argparse.SUPPRESS)
    parser.add_argument("--mid-only", action="store_true")
    parser.add_argument("--load", action="store_true", help="only host RAM at load (mid model, 4 and 8 bits)")
    parser.add_argument("--option", action="append", help="only these options (repeatable)")
    parser.add_argument("--one-process", action="store_true", help="every option of a model in one process (faster)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*json.loads(args.worker))))
        return
    if args.load_worker:
        print(json.dumps(load_worker(*json.loads(args.load_worker))))
        return
    if args.load:
        print("host RAM at load (the plan's figure less the per-process runtime, plus the quantised Linears that a "
              "CPU device keeps in the same RAM) vs a measured warm load (load_worker)")
        for row in compare_load():
            print(f"{row['bits']}-bit: planned {row['planned'] / MiB:.1f} MiB, measured {row['load_rise'] / MiB:.1f} "
                  f"MiB, ratio {row['ratio']:.3f} (file {row['file'] / MiB:.1f} MiB: page cache "
                  f"{row['cached'] / MiB:.1f}, mapped {row['mapped'] / MiB:.1f}; RSS rise {row['rss_rise'] / MiB:.1f}; "
                  f"weights {row['weights'] / MiB:.1f}, quantised planned {row['plan']['weights'] / MiB:.1f}; "
                  f"transient {row['transient'] / MiB:.1f}, planned {row['plan']['transient'] / MiB:.1f})", flush=True)
        return
    models = ("mid",) if args.mid_only else tuple(MODELS)
    print(f"{'model':5s} {'option':18s} {'planned MiB':>11s} {'measured':>9s} {'ratio':>7s}   "
          "(before-step live + step rise; plan: weights/lora/activations/logits)")
    for row in compare(models, args.option, fresh=not args.one_process):
        p = row["plan"]
        print(f"{row['model']:5s} {row['option']:18s} {row['planned'] / MiB:11.2f} {row['measured'] / MiB:9.2f} "
              f"{row['ratio']:7.3f}   ({row['live_before'] / MiB:.2f} + {row['step_rise'] / MiB:.2f}; "
              f"{p['weights'] / MiB:.2f}/{p['lora_states'] / MiB:.2f}/{p['activations'] / MiB:.2f}/"
              f"{p['logits'] / MiB:.2f})", flush=True)


if __name__ == "__main__":
    main()
