"""How close is the analytic planner to reality? Prints, in one run:

1. the held-out grid (tests/compiler/planner/accuracy_grid.py: heldout_grid): real models' shapes at
   full width and few layers, every precision/dtype pair, checkpointing off and on, traced under
   FakeTensorMode as the generated script runs the step; each case's error, then the mean and max
   error with and without checkpointing. `--baseline DIR` (a folder holding another checkout as
   `qcompile`, e.g. main) plans the same specs with that code too: the before/after table;
2. issue 11's strategies (chunked loss, int8/fp8 compression, activation offload), checkpointing off
   and on, on full-width two-layer shapes: the device peak and offload's host bytes against the trace;
3. the planner against real CPU-traced steps of tiny models (the test grid);
4. host RAM at load: peak RSS (and PSS after load) of 1 and 2 ranks each loading a random
   safetensors model of a few hundred MB as bfloat16 (memory-mapped, shared) and as float32
   (converted, private), against the planner's host figure for the weights.

Needs the train extra. Run: python bench/planner_accuracy.py [--baseline DIR] [--heldout-only]
[--strategies-only]
`--gpu` runs real steps on CUDA instead (bench/gpu_accuracy.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests/ holds the grid
MiB = 2**20
LOADER = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import torch, transformers
def pss():
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0
open("/proc/self/clear_refs", "w").write("5")  # reset the peak-RSS mark (VmHWM) after the imports
before = status("VmRSS:")
base_pss = pss()
model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=getattr(torch, sys.argv[2]))
print(json.dumps({"peak_rss_delta": status("VmHWM:") - before, "pss_delta": pss() - base_pss}))
"""


BASELINE_PLANNER = r"""
import json, sys
from qcompile.backends.naive_mp import NAIVE_MODEL_PARALLEL
from qcompile.compiler.planner import resolve_architecture
from qcompile.compiler.planner.plan import plan
from qcompile.schemas.spec import Spec
from pathlib import Path
out = {}
for name, (data, folder) in json.loads(sys.stdin.read()).items():
    spec = Spec.model_validate(data)
    out[name] = plan(spec, resolve_architecture(spec, Path(folder)), NAIVE_MODEL_PARALLEL).devices[0].tensor_bytes
print(json.dumps(out))
"""


def _baseline_plans(baseline: Path, specs: dict) -> dict:
    """Tensor peaks that another checkout's planner gives the same specs (one subprocess)."""
    import os

    env = dict(os.environ, PYTHONPATH=str(baseline))
    done = subprocess.run([sys.executable, "-c", BASELINE_PLANNER], input=json.dumps(specs), env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def _summary(label: str, errors: dict[str, float], names: list[str]) -> str:
    parts = []
    for title, pick in (("without checkpointing", False), ("with checkpointing", True)):
        values = [abs(errors[n]) for n in names if n.endswith(" ckpt") == pick]
        parts.append(f"{title}: mean {sum(values) / len(values):.2%}, max {max(values):.2%}")
        parts[-1] += f" ({len(values)} cases)"
    return f"{label:9s} " + "; ".join(parts)


def heldout(baseline: Path | None) -> dict[str, float]:
    """The held-out grid: plan (and the baseline's plan) against the fake-mode trace of each case."""
    from qcompile.compiler.planner.trace import TraceCase, trace_step_peak
    from tests.compiler.planner.accuracy_grid import heldout_grid, planned_peak, spec_data

    grid = heldout_grid()
    with tempfile.TemporaryDirectory() as tmp:
        specs = {}
        for i, (name, changes) in enumerate(grid):
            folder = Path(tmp) / str(i)
            folder.mkdir()
            specs[name] = (spec_data(TraceCase(**changes), folder), str(folder))
        before = _baseline_plans(baseline, specs) if baseline else {}
        print("held-out grid: plan vs traced step (fake tensors, full width; peak tensor MiB)")
        print(f"{'case':52s} {'traced':>9s} {'planned':>9s} {'error':>8s}" + ("   before" if before else ""))
        errors, old = {}, {}
        for i, (name, changes) in enumerate(grid):
            case = TraceCase(**changes)
            traced, planned = trace_step_peak(case, fake=True), planned_peak(case, Path(tmp) / str(i))
            errors[name] = (planned - traced) / traced
            line = f"{name:52s} {traced / MiB:9.0f} {planned / MiB:9.0f} {errors[name]:+8.2%}"
            if before:
                old[name] = (before[name] - traced) / traced
                line += f" {old[name]:+8.2%}"
            print(line, flush=True)
    names = [n for n, _ in grid]
    if old:
        print(_summary("before", old, names))
    print(_summary("after", errors, names) + "\n")
    return errors


def strategies() -> dict[str, float]:
    """Issue 11's strategies (tests/compiler/planner/accuracy_grid.py: strategy_grid): the plan against the
    fake-mode trace that runs the script's own parts; the device peak, and the host bytes of offload."""
    from qcompile.compiler.planner.trace import TraceCase, trace_step
    from tests.compiler.planner.accuracy_grid import planned, strategy_grid

    print("strategies: plan vs traced step (fake tensors, full width, 2 layers; MiB)")
    print(f"{'case':52s} {'traced':>8s} {'planned':>8s} {'error':>8s} {'host':>7s} {'planned':>8s} {'error':>8s}")
    errors = {}
    for name, changes in strategy_grid():
        case = TraceCase(**changes)
        with tempfile.TemporaryDirectory() as folder:
            traced, plan = trace_step(case, fake=True), planned(case, Path(folder))
        errors[name] = (plan.device - traced.device) / traced.device
        line = f"{name:52s} {traced.device / MiB:8.0f} {plan.device / MiB:8.0f} {errors[name]:+8.2%}"
        if traced.host:
            errors[name + " host"] = (plan.host - traced.host) / traced.host
            line += f" {traced.host / MiB:7.0f} {plan.host / MiB:8.0f} {errors[name + ' host']:+8.2%}"
        print(line, flush=True)
    worst = max(errors, key=lambda n: abs(errors[n]))
    print(f"worst |error|: {abs(errors[worst]):.2%} ({worst}) over {len(errors)} figures\n")
    return errors


def accuracy_grid() -> float:
    """The test grid (tests/compiler/planner/accuracy_grid.py): `plan()` against traced steps."""
    from qcompile.compiler.planner.trace import TraceCase, trace_step_peak
    from tests.compiler.planner.accuracy_grid import ACCURACY_GRID, case_name, planned_peak

    print("planner vs traced step (peak allocated tensor bytes)")
    print(f"{'case':70s} {'traced':>12s} {'planned':>12s} {'error':>8s}")
    worst = 0.0
    for changes in ACCURACY_GRID:
        case = TraceCase(**changes)
        with tempfile.TemporaryDirectory() as folder:
            traced, planned = trace_step_peak(case), planned_peak(case, Path(folder))
        error = (planned - traced) / traced
        worst = max(worst, abs(error))
        print(f"{case_name(changes)[:70]:70s} {traced:12d} {planned:12d} {error:+8.2%}")
    print(f"worst |error|: {worst:.2%} over {len(ACCURACY_GRID)} cases\n")
    return worst


def _save_model(folder: Path) -> tuple[Path, int]:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(hidden_size=1024, intermediate_size=2816, num_hidden_layers=6, num_attention_heads=16,
                         num_key_value_heads=16, vocab_size=32000, tie_word_embeddings=False)
    torch.set_default_dtype(torch.bfloat16)
    model = Qwen2ForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.save_pretrained(folder)
    return folder, sum(p.numel() for p in model.parameters())


def host_at_load() -> None:
    from qcompile.compiler.planner.architecture import Architecture
    from qcompile.compiler.planner.memory import PRIVATE_LOAD_FACTOR

    with tempfile.TemporaryDirectory() as tmp:
        folder, params = _save_model(Path(tmp) / "model")
        arch = Architecture.from_config(json.loads((folder / "config.json").read_text()), str(folder))
        assert arch.num_params() == params
        print(f"host RAM at load: random Qwen2 model, {params:,} parameters, bf16 safetensors "
              f"({params * 2 / MiB:.0f} MiB on disk)")
        print(f"{'load dtype':10s} {'ranks':>5s} {'sum peak RSS':>13s} {'sum PSS':>10s} {'planned':>10s}")
        for dtype, width in (("bfloat16", 2), ("float32", 4)):
            for ranks in (1, 2):
                procs = [subprocess.Popen([sys.executable, "-c", LOADER, str(folder), dtype], stdout=subprocess.PIPE)
                         for _ in range(ranks)]
                results = [json.loads(p.communicate()[0]) for p in procs]
                rss = sum(r["peak_rss_delta"] for r in results)
                pss = sum(r["pss_delta"] for r in results)
                shared = dtype == "bfloat16"  # stored bf16: mmap shares one copy; float32 converts per rank
                planned = params * 2 if shared else ranks * PRIVATE_LOAD_FACTOR * params * width
                print(f"{dtype:10s} {ranks:5d} {rss / MiB:10.0f} MiB {pss / MiB:6.0f} MiB {planned / MiB:6.0f} MiB")
        print("(RSS counts a shared page-cache copy once per rank; PSS splits it between them)")


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="a folder holding another checkout as `qcompile`")
    parser.add_argument("--heldout-only", action="store_true", help="only the held-out grid and the strategies")
    parser.add_argument("--strategies-only", action="store_true", help="only the strategies' traces")
    parser.add_argument("--gpu", action="store_true", help="real steps on CUDA against the plan per backend")
    parser.add_argument("--dry", action="store_true", help="with --gpu: the same code on CPU at tiny width")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    start = time.time()
    if args.gpu:
        from bench.gpu_accuracy import run

        run(dry=args.dry)
        return
    if args.strategies_only:
        strategies()
        return
    heldout(args.baseline)
    strategies()
    if not args.heldout_only:
        accuracy_grid()
        host_at_load()
    print(f"\n{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
