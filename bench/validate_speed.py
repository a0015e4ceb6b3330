"""How fast is `qcompile validate`? Prints, in one run, against two baselines measured in the same run:
Python's own start-up (`python -c pass`) and a plain `yaml.safe_load` of the same files.

1. cold start: `qcompile validate one.yaml` as a fresh process (the pre-commit / editor case), next to a fresh
   `python -c pass`, a fresh `python -c "import yaml; yaml.safe_load(...)"` of the same file, and the import
   floor of a pydantic validation (`import yaml, pydantic` and what building one model loads). Commands run
   round-robin so a change in the machine's load hits all alike; min and median of wall and CPU time.
   Bytecode is cached first (a pip install compiles it; PYTHONDONTWRITEBYTECODE=1 in an editable checkout
   would add compiling every qcompile module to each start);
2. a folder of N specs (default 1,000) in one process: in-process through `qcompile.validate`, and as
   one `qcompile validate DIR` command (start-up included);
3. what the imports cost: `import qcompile` (must stay cheap) and `import qcompile.schemas`, from
   `python -X importtime`, and whether torch was imported (it must not be).

Only the light core is needed. Run: python bench/validate_speed.py [--n 1000] [--repeats 5] [--cold 15]

The specs are the test specs with varied values, each with the tiny model's config.json next to it,
so the memory check (architecture + planner) runs for every spec, as it does in CI with pinned configs.
A shared machine is noisy: figures are given as wall time and as CPU time (user + system, which waiting
for a core does not inflate), and the baselines are measured in the same run so the ratios are comparable
across runs and machines.
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
# The third-party imports a pydantic validation cannot avoid: pydantic's core and a model build (which loads
# pydantic's plugin loader and with it importlib.metadata), and yaml.
FLOOR = ("import yaml, pydantic\nclass M(pydantic.BaseModel):\n    x: int = 0\n"
         "M.model_validate(yaml.safe_load(open({path!r})) and {{}})")
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


def run_once(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall and CPU time (user + system) of one run of a command, in seconds. CPU time is the steadier figure
    on a shared machine: waiting for a core counts in the wall time only."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def wall(cmd: list[str], repeats: int, env: dict | None = None) -> tuple[float, float]:
    """Median wall time and median CPU time of a command, in seconds."""
    runs = [run_once(cmd, env) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def cold_starts(commands: dict[str, list[str]], repeats: int) -> dict[str, dict[str, float]]:
    """Each command `repeats` times, round-robin, with bytecode caching on (one warm-up run writes it):
    {name: {wall_min, wall_median, cpu_min, cpu_median}}."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for cmd in commands.values():
        run_once(cmd, env)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, cmd in commands.items():
            runs[name].append(run_once(cmd, env))
    return {name: {"wall_min": min(w for w, _ in r), "wall_median": statistics.median(w for w, _ in r),
                   "cpu_min": min(c for _, c in r), "cpu_median": statistics.median(c for _, c in r)}
            for name, r in runs.items()}


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


def print_cold(cold: dict[str, dict[str, float]], repeats: int) -> None:
    base, yml = cold["python -c pass"], cold["python -c 'yaml.safe_load(one.yaml)'"]
    print(f"cold start, fresh processes, {repeats} rounds (min / median of each):")
    print(f"{'what':44s} {'wall s':>13s} {'cpu s':>13s}   x pass (cpu)   x yaml (cpu)")
    for name, t in cold.items():
        print(f"{name:44s} {t['wall_min']:6.3f}/{t['wall_median']:6.3f} {t['cpu_min']:6.3f}/{t['cpu_median']:6.3f}"
              f"   {t['cpu_min'] / base['cpu_min']:4.1f}/{t['cpu_median'] / base['cpu_median']:4.1f}"
              f"      {t['cpu_min'] / yml['cpu_min']:4.1f}/{t['cpu_median'] / yml['cpu_median']:4.1f}")
    qc = cold["qcompile validate one.yaml"]
    print(f"  (wall ratios, min/median: {qc['wall_min'] / base['wall_min']:.1f}/"
          f"{qc['wall_median'] / base['wall_median']:.1f} x pass, {qc['wall_min'] / yml['wall_min']:.1f}/"
          f"{qc['wall_median'] / yml['wall_median']:.1f} x yaml)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="specs in the folder")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cold", type=int, default=15, help="rounds of the cold-start commands")
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_corpus(folder, args.n)
        one = str(paths[0])
        cold = cold_starts({
            "python -c pass": [py, "-c", "pass"],
            "python -c 'yaml.safe_load(one.yaml)'": [py, "-c", f"import yaml; yaml.safe_load(open({one!r}))"],
            "import floor: yaml + pydantic + one model": [py, "-c", FLOOR.format(path=one)],
            "qcompile validate one.yaml": [py, "-m", "qcompile", "validate", one],
        }, args.cold)
        folder_cmd = wall([py, "-m", "qcompile", "validate", "--format", "json", str(folder)],
                          max(1, args.repeats // 2))
        inside, errors = in_process(paths, args.repeats)
        heavy = subprocess.run([py, "-c", HEAVY, one], capture_output=True, text=True,
                               check=False).stdout.strip().splitlines()
    base = inside["safe_load"]
    rows = [
        (f"yaml.safe_load of the {args.n} files", base),
        ("  the same with libyaml (CSafeLoader)", inside["safe_load (libyaml)"]),
        (f"qcompile.validate({args.n} files), in process", inside["validate"]),
        (f"qcompile validate DIR ({args.n} files, one process)", folder_cmd),
    ]
    print(f"qcompile validate speed: {args.n} specs with the memory check "
          f"(python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    print_cold(cold, args.cold)
    print(f"one process, median of {args.repeats}:")
    print(f"{'what':52s} {'wall s':>8s} {'cpu s':>8s}   ratio (wall / cpu)")
    for name, (w, c) in rows:
        print(f"{name:52s} {w:8.3f} {c:8.3f}   {w / base[0]:5.2f} / {c / base[1]:5.2f} x safe_load")
    print(f"{'import qcompile (-X importtime)':52s} {import_ms('qcompile') / 1000:8.3f}")
    print(f"{'import qcompile.schemas (-X importtime)':52s} {import_ms('qcompile.schemas') / 1000:8.3f}")
    print(f"errors found in the corpus: {errors} (expected 0); heavy modules imported by a validate: "
          f"{heavy[-1] if heavy else '?'}")
    print("targets: 1,000 specs < 2 s in one process; a cold validate < 0.15 s (7.5 x python -c pass); no torch")


if __name__ == "__main__":
    main()
