"""Tokens/s of each backend's generated run against a hand-written peft + torch AdamW loop, on the
same tiny model, data, batch, sequence length and steps, in one run. Prints the ratios.

    python examples/make_tiny_model.py && python bench/throughput.py [--steps 60] [--repeats 3]

Same work on both sides: budgets are large and the optimizer stays in place (nothing offloaded), the
same padding, gradient checkpointing, clipping and token count (non-padding tokens). Both rates cover
the same window, from the end of the first logged step to the end of the run, so start-up, model load
and warm-up are excluded from both. Each repeat runs a generated job and then the baseline, so both
see the same load on a shared machine; each side's best repeat is compared (as timeit does), and the
median ratio is printed too.

`--packing` instead compares one generated job with `data.packing` off and on (the same samples, batch of
one row, max_seq_length 256, nothing padded on either side so every counted token is real) and prints the
packed/unpacked ratio of tokens per second."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
NOTHING_OFFLOADED = {"offload": {"optimizer": "none", "params": "none"}}  # the baseline moves nothing either
CASES = [  # name, example spec, overrides (the two-rank case has no single-process goal)
    ("zero2-cpu x1", "zero2-cpu.yaml", {"hardware": {"devices_per_node": 1}, "strategies": NOTHING_OFFLOADED}),
    ("zero2-cpu x2", "zero2-cpu.yaml", {"strategies": NOTHING_OFFLOADED}),
    ("offload-cpu", "offload-cpu.yaml", {"hardware": {"device_memory": "1GiB"}}),
    ("naive-mp-cpu", "naive-mp-cpu.yaml", {"hardware": {"device_memory": "1GiB"}}),
]


LOGGING_STEPS = 5


def write_spec(folder: Path, example: str, overrides: dict, steps: int, data: dict | None = None) -> Path:
    data, extra = yaml.safe_load((EXAMPLES / example).read_text()), data
    for section, values in overrides.items():
        data[section] = {**data[section], **values}
    data["model"]["name"] = str(EXAMPLES / "models" / "tiny-qwen2")
    data["data"] = {"path": str(EXAMPLES / "data" / "alpaca.jsonl"), "format": "alpaca", **(extra or {})}
    data["lora"] = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    data["training"].update({"micro_batch_size": 4, "gradient_accumulation_steps": 1, "max_steps": steps,
                             "save_steps": 10 * steps, "logging_steps": LOGGING_STEPS,
                             "output_dir": str(folder / "out")})
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def rate_from_metrics(output_dir: Path) -> float:
    """Tokens/s from the first logged step (LOGGING_STEPS) to the last: the window the baseline uses."""
    rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0], rows[-1]
    assert first["step"] == LOGGING_STEPS, first
    return (last["tokens"] - first["tokens"]) / (last["elapsed_s"] - first["elapsed_s"])


def emit_build(spec_path: Path):
    from qcompile.compiler.emit import emit

    return emit(spec_path, spec_path.parent / "build", memory_check=False)


def generated_run(result, output_dir: Path) -> float:
    from qcompile.compiler.launch import job_env, launch_script_argv, run_job

    shutil.rmtree(output_dir, ignore_errors=True)  # a fresh run each repeat (the job refuses to overwrite one)
    outcome = run_job(result.build_dir, launch_script_argv(False), job_env(result.build.env), echo=lambda line: None)
    if outcome.returncode:
        sys.exit("\n".join(outcome.tail))
    return rate_from_metrics(output_dir)


def baseline(spec_path: Path, steps: int) -> float:
    """The loop a user would write by hand: peft + torch AdamW, same data order and batch shape."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    build = spec_path.parent / "build"
    cfg = json.loads((build / "train_config.json").read_text())
    module_spec = importlib.util.spec_from_file_location("generated_train", build / "train.py")
    script = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(script)  # only its data encoding, so both see the same tokens
    tokenizer = AutoTokenizer.from_pretrained(cfg["model"]["path"])
    examples = script.build_data(cfg, tokenizer)[0]
    collate = script.data_collator(cfg, tokenizer)
    torch.manual_seed(cfg["training"]["seed"])
    model = AutoModelForCausalLM.from_pretrained(cfg["model"]["path"], dtype=torch.float32)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=cfg["training"]["learning_rate"])
    model.train()
    batch_size, tokens, start = cfg["training"]["micro_batch_size"], 0, 0.0
    for step in range(1, steps + 1):
        batch = collate(examples[((step - 1) * batch_size) % len(examples):][:batch_size])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["training"]["max_grad_norm"])
        optimizer.step()
        optimizer.zero_grad()
        if step == LOGGING_STEPS:  # the generated run's first metrics row: the same window on both sides
            start = time.perf_counter()
        elif step > LOGGING_STEPS:
            tokens += int(batch["attention_mask"].sum())
    return tokens / (time.perf_counter() - start)


PACKING_CASE = ("zero2-cpu.yaml", {"hardware": {"devices_per_node": 1},
                                   "strategies": {**NOTHING_OFFLOADED, "max_seq_length": 256}})


def packing(steps: int, repeats: int) -> None:
    """Tokens/s of the same job with data.packing off and on; each repeat runs both, back to back."""
    example, overrides = PACKING_CASE
    rates = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        builds = {}
        for packed in rates:
            folder = Path(tmp) / f"packing-{packed}"
            folder.mkdir()
            spec_path = write_spec(folder, example, overrides, steps, {"packing": packed})
            spec = yaml.safe_load(spec_path.read_text())
            spec["training"]["micro_batch_size"] = 1  # one row per step: no padding on either side
            spec_path.write_text(yaml.safe_dump(spec))
            builds[packed] = (spec_path, emit_build(spec_path))
        for repeat in range(repeats):
            for packed, (spec_path, result) in builds.items():
                rates[packed].append(generated_run(result, spec_path.parent / "out"))
            print(f"repeat {repeat + 1} unpacked {rates[False][-1]:8,.0f} tok/s   packed {rates[True][-1]:8,.0f} tok/s",
                  flush=True)
    ratios = [p / u for p, u in zip(rates[True], rates[False], strict=True)]
    print(f"ratio packed/unpacked (best) {max(rates[True]) / max(rates[False]):.2f}   "
          f"(median) {statistics.median(ratios):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--packing", action="store_true", help="compare data.packing off and on instead")
    options = parser.parse_args()
    if options.steps <= 2 * LOGGING_STEPS:
        sys.exit(f"--steps must be above {2 * LOGGING_STEPS}")
    if options.packing:
        packing(options.steps, options.repeats)
        return
    generated, reference = {name: [] for name, _, _ in CASES}, {name: [] for name, _, _ in CASES}
    with tempfile.TemporaryDirectory() as tmp:
        builds = {}
        for name, example, overrides in CASES:
            folder = Path(tmp) / name.replace(" ", "_")
            folder.mkdir()
            spec_path = write_spec(folder, example, overrides, options.steps)
            builds[name] = (spec_path, emit_build(spec_path))
        for repeat in range(options.repeats):
            for name, (spec_path, result) in builds.items():
                generated[name].append(generated_run(result, spec_path.parent / "out"))
                reference[name].append(baseline(spec_path, options.steps))
                print(f"repeat {repeat + 1} {name:24s} {generated[name][-1]:8,.0f} tok/s"
                      f"   hand-written loop {reference[name][-1]:8,.0f} tok/s", flush=True)
    print(f"{'':31s} {'best tok/s':>10s} {'loop best':>10s} {'ratio':>6s} {'median ratio':>13s}")
    for name in generated:
        best, loop_best = max(generated[name]), max(reference[name])
        ratios = [run / loop for run, loop in zip(generated[name], reference[name], strict=True)]
        median = statistics.median(ratios)
        print(f"ratio {name:24s}  {best:10,.0f} {loop_best:10,.0f} {best / loop_best:6.2f} {median:13.2f}")


if __name__ == "__main__":
    main()
