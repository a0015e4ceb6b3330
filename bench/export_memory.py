"""How much host RAM does `qcompile export` use, against what its plan said? Builds a mid-size random
Qwen2 (default about 270M parameters, bfloat16, saved in ~100 MB safetensors shards), a LoRA adapter on it
and a spec, then runs `qcompile export` as a fresh process once per mode and prints the peak RSS that
export reports (VmHWM) next to the plan's figure, and a plain `python -c "import torch, transformers,
peft"` process as the baseline of what the libraries alone take.

Needs the train extra. Run: python bench/export_memory.py [--layers 16] [--hidden 1024] [--keep DIR]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEAK = re.compile(r"peak host RAM: (.+?) \(planned (.+?),")


def build(folder: Path, layers: int, hidden: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Qwen2Config

    sys.path.insert(0, str(REPO / "examples"))
    from make_tiny_model import make_tokenizer

    config = Qwen2Config(vocab_size=32000, hidden_size=hidden, intermediate_size=hidden * 11 // 4,
                         num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 128,
                         tie_word_embeddings=False, dtype="bfloat16")
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    base = folder / "base"
    model.save_pretrained(base, max_shard_size="100MB")
    make_tokenizer().save_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"],
                                                  init_lora_weights=False))
    peft_model.save_pretrained(folder / "run")
    spec = folder / "spec.yaml"
    spec.write_text(f"""version: 1
model: {{name: {base}, dtype: bfloat16}}
hardware: {{accelerator: cpu, devices_per_node: 1, device_memory: 8GiB, host_memory: 16GiB}}
lora: {{r: 16, alpha: 32, target_modules: [q_proj, v_proj, down_proj]}}
backend: deepspeed-zero2
data: {{path: {REPO / 'examples' / 'data' / 'alpaca.jsonl'}, format: alpaca}}
training: {{output_dir: {folder / 'run'}, max_steps: 1}}
""")
    return spec


def export(spec: Path, mode: str, out: Path) -> tuple[str, str, str]:
    result = subprocess.run([sys.executable, "-m", "qcompile", "export", str(spec), "--mode", mode, "-o", str(out)],
                            capture_output=True, text=True, cwd=spec.parent)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    plan_line = next(line for line in result.stderr.splitlines() if "host RAM: in memory" in line)
    peak, planned = PEAK.search(result.stderr).groups()
    return peak, planned, plan_line.strip()


def baseline() -> float:
    code = ("import torch, transformers, peft; from qcompile.cli.export import peak_rss; "
            "print(peak_rss())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1]) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        build(args.build, args.layers, args.hidden)
        return
    folder = args.keep or Path(tempfile.mkdtemp(prefix="qcompile-export-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "spec.yaml").exists():  # built in a child: this process stays small
        subprocess.run([sys.executable, __file__, "--build", str(folder), "--layers", str(args.layers),
                        "--hidden", str(args.hidden)], check=True)
    spec = folder / "spec.yaml"
    print(f"model: {sum(p.stat().st_size for p in (folder / 'base').glob('*.safetensors')) / 2**20:.0f} MiB of "
          f"bfloat16 safetensors in {len(list((folder / 'base').glob('*.safetensors')))} shards")
    print(f"baseline: import torch, transformers, peft: {baseline():.0f} MiB peak RSS")
    for mode in ("memory", "shards"):
        peak, planned, plan_line = export(spec, mode, folder / f"merged-{mode}")
        print(f"{mode:>6}: peak RSS {peak}, plan {planned}   ({plan_line})")


if __name__ == "__main__":
    main()
