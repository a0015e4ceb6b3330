"""preflight: `qcompile run SPEC --preflight [--steps N]` runs the real job for a few steps before the real
run, so a job that cannot fit, save or resume fails in a minute instead of hours in.

The job is built into a temporary folder and trains into a temporary output directory: N steps on the
longest rows (repeated, so every step has the real job's largest shapes at the real micro-batch), a
checkpoint at step N, then a second launch resumes from it for one step. The measured peaks (summary.json
of both launches) are compared with the budgets and the plan, and the time per step gives an estimate
for the whole run. The temporary folder is removed at the end; the user's output directory and build
directory are never written (the run guard's checks run first, read-only, so a preflight refuses what
the real run would refuse)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from qcompile.errors import UserError
from qcompile.schemas.units import format_bytes

from .emit import emit_loaded
from .launch import STEP_LINE, ProgressView, job_env, launch_script_argv, run_job
from .run_guard import check_run

DEFAULT_STEPS = 3
OUT_OF_MEMORY = ("out of device memory", "was killed", "out-of-memory", "out of memory")


@dataclass
class Flight:
    """What one launch of the preflight left: its exit, its summary.json and the lines worth keeping."""

    returncode: int
    summary: dict
    metrics: list[dict]
    tail: list[str]
    cause: str | None
    resumed_from: str | None = None
    lines: list[str] = field(default_factory=list)


def configure(config_path: Path, workdir: Path, steps: int) -> dict:
    """The temporary build's train_config.json: steps + 1 steps into the temporary output directory, the
    first launch stopping at `steps` with a checkpoint (preflight.stop_at), a log line per step, no
    trackers."""
    cfg = json.loads(config_path.read_text(encoding="utf-8"))
    train = cfg["training"]
    cfg["preflight"] = {"steps": steps, "run_max_steps": train["max_steps"], "stop_at": steps}
    train.update(output_dir=str(workdir / "output"), max_steps=steps + 1, save_steps=steps, logging_steps=1,
                 report_to=[])
    if isinstance(cfg["backend"].get("offload_folder"), str):
        cfg["backend"]["offload_folder"] = str(workdir / "offload")
    config_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return cfg


def launch(build_dir: Path, env: dict, resume: bool, echo: Callable[[str], None]) -> Flight:
    """One launch of the temporary build; only its step lines are shown (as a bar on a terminal)."""
    view, kept = ProgressView(echo), []

    def show(line: str) -> None:
        kept.append(line)
        text = line.split("]:", 1)[1] if line.startswith("[default") else line
        if STEP_LINE.match(text):
            view(line)

    try:
        result = run_job(build_dir, launch_script_argv(resume), env, echo=show)
    finally:
        view.close()
    output = Path(json.loads((build_dir / "train_config.json").read_text(encoding="utf-8"))
                  ["training"]["output_dir"])
    summary = _read_json(output / "summary.json") or {}
    metrics = [json.loads(line) for line in _lines(output / "metrics.jsonl")]
    resumed = next((line.split("resuming from ", 1)[1] for line in kept if "resuming from " in line), None)
    return Flight(result.returncode, summary, metrics, result.tail, result.cause, resumed, kept)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError:
        return []


def memory_verdict(flights: list[Flight]) -> tuple[bool, list[str]]:
    """(fits, lines): the tightest measured figure against its budget, over every launch."""
    worst: dict[str, dict] = {}
    for flight in flights:
        for row in flight.summary.get("memory") or []:
            if row.get("measured_bytes") is None:
                continue
            if row["what"] not in worst or row["measured_bytes"] > worst[row["what"]]["measured_bytes"]:
                worst[row["what"]] = row
    budgeted = [r for r in worst.values() if r.get("budget_bytes")]
    if not budgeted:
        return True, ["memory: measured, but no budget to compare with (see summary.json)"]
    tight = max(budgeted, key=lambda r: r["measured_bytes"] / r["budget_bytes"])
    headroom = 1 - tight["measured_bytes"] / tight["budget_bytes"]
    planned = f"; measured/planned {tight['ratio']:.2f}" if tight.get("ratio") is not None else ""
    where = (f"tightest: {tight['what']} {format_bytes(tight['measured_bytes'])} of "
             f"{format_bytes(tight['budget_bytes'])}{planned}")
    if headroom < 0:
        return False, [f"memory: would run out: {where}"]
    return True, [f"memory: fits with {headroom:.0%} headroom ({where})"]


def time_verdict(flight: Flight) -> str:
    """Seconds per step after the first (which pays for warm-up), and the whole run's estimate."""
    steps = [m for m in flight.metrics if m.get("loss") is not None]
    if not steps:
        return "time: no step finished"
    if len(steps) > 1:
        per_step = (steps[-1]["elapsed_s"] - steps[0]["elapsed_s"]) / (steps[-1]["step"] - steps[0]["step"])
    else:
        per_step = steps[0]["elapsed_s"] / max(steps[0]["step"], 1)
    total = (flight.summary.get("preflight") or {}).get("run_total_steps")
    start = (flight.summary.get("wall_s") or 0) - (flight.summary.get("train_s") or 0)
    whole = f"; about {_duration(per_step * total)} for the run's {total:,} steps" if total else ""
    return f"time: {per_step:.2f} s per step{whole} (plus about {_duration(start)} to start)"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def failure_lines(flight: Flight, what: str) -> list[str]:
    reached = flight.summary.get("steps", 0)
    cause = flight.cause or "see the lines above"
    if any(word in cause for word in OUT_OF_MEMORY):
        head = f"{what}: would run out of memory at step {reached + 1}: {cause}"
    else:
        head = f"{what}: failed at step {reached + 1} (exit code {flight.returncode}): {cause}"
    return [head, *(f"  | {line}" for line in flight.tail)]


def preflight(loaded, steps: int = DEFAULT_STEPS, echo: Callable[[str], None] = print) -> bool:
    """Run the preflight for a loaded spec; print the verdict; True when the job fits, saves and resumes."""
    spec = loaded.context.spec
    if spec.hardware.nodes > 1:
        raise UserError(f"--preflight runs on one machine, but the spec asks for {spec.hardware.nodes} nodes",
                        "run it for a one-node copy of the spec (hardware.nodes: 1)")
    output_dir = check_run(loaded, False).paths.output_dir  # what refuses the real run refuses this (reads only)
    workdir = Path(tempfile.mkdtemp(prefix="qcompile-preflight-"))
    try:
        build = emit_loaded(loaded, workdir / "build")
        configure(build.build_dir / "train_config.json", workdir, steps)
        env = job_env(build.build.env)
        echo(f"preflight: {steps} steps on the longest rows, a checkpoint at step {steps}, then a resume for one "
             f"step (in {workdir})")
        first = launch(build.build_dir, env, False, echo)
        if first.returncode != 0:
            lines, ok = failure_lines(first, "preflight"), False
        else:
            config = build.build_dir / "train_config.json"
            cfg = json.loads(config.read_text(encoding="utf-8"))
            cfg["preflight"]["stop_at"] = None
            config.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            second = launch(build.build_dir, env, True, echo)
            fits, lines = memory_verdict([first, second])
            resumed = second.returncode == 0 and second.summary.get("steps") == steps + 1 and (
                second.resumed_from or "").endswith(f"checkpoint-{steps}")
            if resumed:
                lines.append(f"checkpoint round-trip: ok (saved at step {steps}, resumed, trained step {steps + 1})")
            elif second.returncode != 0:
                lines += failure_lines(second, "checkpoint round-trip")
            else:
                lines.append(f"checkpoint round-trip: FAILED (resumed from {second.resumed_from or 'nothing'}, "
                             f"ended at step {second.summary.get('steps')})")
            lines.append(time_verdict(first))
            ok = fits and resumed
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    verdict = "ready to run" if ok else "NOT ready to run"
    for line in [*lines, f"preflight: {verdict}; removed {workdir}; {output_dir} was not touched"]:
        echo(line)
    return ok
