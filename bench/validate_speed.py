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
A shared machine is noisy: each figure is the median of its repeats, given as wall time and as CPU time
(user + system, which waiting for a core does not inflate), and the baselines are measured in the same
run so the ratios are comparable across runs and machines.
"""

from __future__ import annotations

import argparse
import os
import resource
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
SOURCES = sorted(p.name for p in SPECS.glob("*.yaml") if p.stem != "injection")  # one spec per backend


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


def wall(cmd: list[str], repeats: int, env: dict | None = None) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system) of a command, in seconds. CPU time is the steadier
    figure on a shared machine: waiting for a core counts in the wall time only."""
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def import_ms(module: str) -> float:
    """Cumulative import time of a module in a fresh process (`python -X importtime`), in ms."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                            capture_output=True, text=True, check=True)
    for line in result.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1]) / 1000
    return 0.0


def in_process(paths: list[Path], repeats: int) -> tuple[dict, int]:
    """Median seconds (wall, CPU) for yaml.safe_load of every file, the same with libyaml's CSafeLoader, and
    qcompile.validate of the same files."""
    import qcompile

    def load_all(loader):
        for p in paths:
            with open(p, encoding="utf-8") as fh:
                yaml.load(fh, Loader=loader)  # SafeLoader or CSafeLoader

    qcompile.validate(paths[:1])  # the first call builds the validators; a process validates many specs
    runs = {"safe_load": lambda: load_all(yaml.SafeLoader),
            "safe_load (libyaml)": lambda: load_all(getattr(yaml, "CSafeLoader", yaml.SafeLoader)),
            "validate": lambda: sum(d.is_error for d in qcompile.validate(paths))}
    times: dict = {name: ([], []) for name in runs}
    errors = 0
    for _ in range(repeats):
        for name, run in runs.items():
            start, cpu = time.perf_counter(), time.process_time()
            result = run()
            times[name][0].append(time.perf_counter() - start)
            times[name][1].append(time.process_time() - cpu)
            errors = result if name == "validate" else errors
    return {name: (statistics.median(w), statistics.median(c)) for name, (w, c) in times.items()}, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="specs in the folder")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_corpus(folder, args.n)
        start_up = wall([py, "-c", "pass"], args.repeats)
        cold = wall([py, "-m", "qcompile", "validate", str(paths[0])], args.repeats)
        folder_cmd = wall([py, "-m", "qcompile", "validate", "--format", "json", str(folder)],
                          max(1, args.repeats // 2))
        inside, errors = in_process(paths, args.repeats)
        heavy = subprocess.run([py, "-c", HEAVY, str(paths[0])], capture_output=True, text=True,
                               check=False).stdout.strip().splitlines()
    base = inside["safe_load"]
    rows = [
        ("python -c pass (start-up)", start_up, start_up),
        ("qcompile validate one.yaml (cold)", cold, start_up),
        (f"yaml.safe_load of the {args.n} files", base, base),
        ("  the same with libyaml (CSafeLoader)", inside["safe_load (libyaml)"], base),
        (f"qcompile.validate({args.n} files), in process", inside["validate"], base),
        (f"qcompile validate DIR ({args.n} files, one process)", folder_cmd, base),
    ]
    print(f"qcompile validate speed: {args.n} specs with the memory check, median of {args.repeats} "
          f"(python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    print(f"{'what':52s} {'wall s':>8s} {'cpu s':>8s}   ratio (wall / cpu)")
    for name, (w, c), (bw, bc) in rows:
        unit = "start-up" if (bw, bc) == start_up else "safe_load"
        print(f"{name:52s} {w:8.3f} {c:8.3f}   {w / bw:5.2f} / {c / bc:5.2f} x {unit}")
    print(f"{'import qcompile (-X importtime)':52s} {import_ms('qcompile') / 1000:8.3f}")
    print(f"{'import qcompile.schemas (-X importtime)':52s} {import_ms('qcompile.schemas') / 1000:8.3f}")
    print(f"errors found in the corpus: {errors} (expected 0); heavy modules imported by a validate: "
          f"{heavy[-1] if heavy else '?'}")
    print("targets: 1,000 specs < 2 s in one process; a cold validate < 0.15 s; no torch")


if __name__ == "__main__":
    main()
