"""Tokens/s of each backend's generated run against a hand-written peft + torch AdamW loop, on the
same tiny model, data, batch, sequence length and steps, in one run. Prints the ratios.

    python examples/make_tiny_model.py && python bench/throughput.py [--steps 30]

Budgets are large here (no disk offload) so every run computes the same thing; the first logged
step is excluded from every rate (warm-up)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
CASES = [  # name, example spec, overrides
    ("deepspeed-zero2 x1", "zero2-cpu.yaml", {"hardware": {"devices_per_node": 1}}),
    ("deepspeed-zero2 x2", "zero2-cpu.yaml", {}),
    ("accelerate-offload", "offload-cpu.yaml", {"hardware": {"device_memory": "1GiB"}}),
    ("naive-model-parallel", "naive-mp-cpu.yaml", {"hardware": {"device_memory": "1GiB"}}),
]


def write_spec(folder: Path, example: str, overrides: dict, steps: int) -> Path:
    data = yaml.safe_load((EXAMPLES / example).read_text())
    for section, values in overrides.items():
        data[section] = {**data[section], **values}
    data["model"]["name"] = str(EXAMPLES / "models" / "tiny-qwen2")
    data["data"] = {"path": str(EXAMPLES / "data" / "alpaca.jsonl"), "format": "alpaca"}
    data["lora"] = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    data["training"].update({"micro_batch_size": 4, "gradient_accumulation_steps": 1, "max_steps": steps,
                             "save_steps": 10 * steps, "logging_steps": 5, "output_dir": str(folder / "out")})
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def rate_from_metrics(output_dir: Path) -> float:
    rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0], rows[-1]
    return (last["tokens"] - first["tokens"]) / (last["elapsed_s"] - first["elapsed_s"])


def generated_run(spec_path: Path) -> float:
    from qcompile.compiler.emit import emit
    from qcompile.compiler.launch import job_env, resolve_argv, run_job

    result = emit(spec_path, spec_path.parent / "build", memory_check=False)
    outcome = run_job(result.build_dir, resolve_argv(result.build.argv, False), job_env(result.build.env),
                      echo=lambda line: None)
    if outcome.returncode:
        sys.exit("\n".join(outcome.tail))
    return rate_from_metrics(spec_path.parent / "out")


def baseline(spec_path: Path, steps: int) -> float:
    """The loop a user would write by hand: peft + torch AdamW, same data order and batch shape."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq

    build = spec_path.parent / "build"
    cfg = json.loads((build / "train_config.json").read_text())
    module_spec = importlib.util.spec_from_file_location("generated_train", build / "train.py")
    script = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(script)  # only its data encoding, so both see the same tokens
    tokenizer = AutoTokenizer.from_pretrained(cfg["model"]["path"])
    examples = script.build_dataset(cfg, tokenizer)
    collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
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
    for step in range(steps):
        batch = collate(examples[(step * batch_size) % len(examples):][:batch_size])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if step == 0:
            start = time.perf_counter()
        else:
            tokens += int(batch["attention_mask"].sum())
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    steps = parser.parse_args().steps
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for name, example, overrides in CASES:
            folder = Path(tmp) / name.replace(" ", "_")
            folder.mkdir()
            results[name] = generated_run(write_spec(folder, example, overrides, steps))
            print(f"{name:24s} {results[name]:10,.0f} tok/s", flush=True)
        reference = baseline(Path(tmp) / "naive-model-parallel" / "spec.yaml", steps)
    print(f"{'hand-written peft loop':24s} {reference:10,.0f} tok/s")
    for name, rate in results.items():
        print(f"ratio {name:24s} {rate / reference:5.2f}")


if __name__ == "__main__":
    main()
