"""How fast is `qcompile validate`? Prints, in one run, against two baselines measured in the same run:
Python's own start-up (`python -c pass`) and a plain `yaml.safe_load` of the same files.

1. cold start: `qcompile validate one.yaml` as a fresh process (the pre-commit / editor case);
2. a folder of N specs (default 1,000) in one process: in-process through `qcompile.validate`, and as
   one `qcompile validate DIR` command (start-up included);
3. what the imports cost: `import qcompile` (must stay cheap) and `import qcompile.schemas`, from
   `python -X importtime`, and whether torch was imported (it must not be).

Only the light core is needed. Run: python bench/validate_speed.py [--n 1000] [--repeats 5]

The specs are the test specs with varied values, each with the tiny model's config.json next to it,
so the memory check (architecture + planner) runs for every spec, as it does in CI with pinned configs.
A shared machine is noisy: each figure is the median of its repeats, and the baselines are measured
in the same run so the ratios are comparable across runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "tests" / "specs"
HEAVY = """import runpy, sys
sys.argv = ['qcompile', 'validate', sys.argv[1]]
try:
    runpy.run_module('qcompile', run_name='__main__')
except SystemExit:
    pass
print(sorted({'torch', 'transformers', 'deepspeed'} & set(sys.modules)))
"""
SOURCES = ["deepspeed-zero2.yaml", "deepspeed-zero3.yaml", "accelerate-offload.yaml", "naive-model-parallel.yaml"]


def make_corpus(folder: Path, n: int) -> list[Path]:
    """n distinct spec files under folder/specs, cycling through the test specs with a varied LoRA rank."""
    shutil.copytree(SPECS / "models", folder / "models")
    shutil.copytree(SPECS / "data", folder / "data")
    texts = [(SPECS / name).read_text() for name in SOURCES]
    out = []
    for i in range(n):
        text = texts[i % len(texts)].replace("r: 8", f"r: {4 + i % 29}")
        path = folder / f"spec-{i:04d}.yaml"
        path.write_text(text)
        out.append(path)
    return out


def wall(cmd: list[str], repeats: int, env: dict | None = None, cwd: Path | None = None) -> float:
    """Median wall time of a command, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def import_ms(module: str) -> float:
    """Cumulative import time of a module in a fresh process (`python -X importtime`), in ms."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                            capture_output=True, text=True, check=True)
    for line in result.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1]) / 1000
    return 0.0


def in_process(paths: list[Path], repeats: int) -> tuple[float, float, int]:
    """Median seconds for yaml.safe_load of every file, and for qcompile.validate of the same files."""
    import qcompile

    def load_all():
        for p in paths:
            with open(p, encoding="utf-8") as fh:
                yaml.safe_load(fh)

    qcompile.validate(paths[:1])  # the first call builds the validators; a process validates many specs
    yaml_t, ours, errors = [], [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        load_all()
        yaml_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        errors = sum(d.is_error for d in qcompile.validate(paths))
        ours.append(time.perf_counter() - start)
    return statistics.median(yaml_t), statistics.median(ours), errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="specs in the folder")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    py = sys.executable
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_corpus(folder, args.n)
        start_up = wall([py, "-c", "pass"], args.repeats)
        cold = wall([py, "-m", "qcompile", "validate", str(paths[0])], args.repeats, env)
        folder_cmd = wall([py, "-m", "qcompile", "validate", "--format", "json", str(folder)],
                          max(1, args.repeats // 2), env)
        yaml_s, ours_s, errors = in_process(paths, args.repeats)
        heavy = subprocess.run([py, "-c", HEAVY, str(paths[0])], capture_output=True, text=True, env=env,
                               check=False).stdout.strip().splitlines()
    print(f"qcompile validate speed ({args.n} specs, median of {args.repeats}; python {sys.version.split()[0]})")
    print(f"{'what':48s} {'seconds':>9s} {'ratio':>22s}")
    print(f"{'python -c pass (start-up)':48s} {start_up:9.3f} {'1.00 x start-up':>22s}")
    print(f"{'qcompile validate one.yaml (cold)':48s} {cold:9.3f} {cold / start_up:6.2f} x start-up{'':>7s}")
    print(f"{'yaml.safe_load of the N files':48s} {yaml_s:9.3f} {'1.00 x safe_load':>22s}")
    print(f"{'qcompile.validate(N files), in process':48s} {ours_s:9.3f} {ours_s / yaml_s:6.2f} x safe_load{'':>6s}")
    print(f"{'qcompile validate DIR (one process, cold)':48s} {folder_cmd:9.3f} "
          f"{(folder_cmd - start_up) / yaml_s:6.2f} x safe_load{'':>6s}")
    print(f"{'import qcompile':48s} {import_ms('qcompile') / 1000:9.3f}")
    print(f"{'import qcompile.schemas':48s} {import_ms('qcompile.schemas') / 1000:9.3f}")
    print(f"errors found in the corpus: {errors} (expected 0); heavy modules imported by validate: "
          f"{heavy[-1] if heavy else '?'}")
    print("targets: 1,000 specs < 2 s in one process; cold validate < 0.15 s; no torch")


if __name__ == "__main__":
    main()
