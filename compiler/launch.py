"""launch: run an emitted job from its build directory with the backend's launcher, stream its
progress, and on failure show the last lines of the rank that failed first and the likely cause. The
launcher's own report of a failed worker (torchrun's traceback and summary) is kept out of the way."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qcompile.backends.base import LAUNCH_VARIABLES
from qcompile.errors import UserError

TAIL_LINES = 25
RANK_PREFIX = re.compile(r"^\[default(\d+)\]:(.*)$")
FAILED_RANK = re.compile(r"failed \(exitcode: (-?\d+)\) local_rank: (\d+)")
# The launchers a backend names, as what the job's Python interpreter runs: launch.sh starts them with
# "${PYTHON:-python3}", and `qcompile run` sets PYTHON to its own interpreter, so a job uses the same
# environment as qcompile.
LAUNCHERS = {
    "python3": [],
    "torchrun": ["-m", "torch.distributed.run"],
    "accelerate": ["-m", "accelerate.commands.accelerate_cli"],
    "deepspeed": ["-m", "deepspeed.launcher.runner"],
}
SCRIPT_PYTHON = '"${PYTHON:-python3}"'
VARIABLE = re.compile(r"\$\{[A-Z_]+\}")
SAFE_AROUND_VARIABLES = re.compile(r"^[A-Za-z0-9_=:,./+-]*$")


# (pattern in the failed rank's last lines, what it most likely means), first match wins
CAUSES = (
    (re.compile(r"^error: (.*)"), "{0}"),  # the job's own message
    (re.compile(r"CUDA out of memory|OutOfMemoryError|out of memory", re.I),
     "out of device memory: check `qcompile plan` and reduce micro_batch_size or max_seq_length"),
    (re.compile(r"Address already in use|EADDRINUSE"), "the rendezvous port is taken: another job uses it"),
    (re.compile(r"^(\w+(?:Error|Exception)): (.*)"), "{0}: {1}"),
)
KILLED = (-9, 137)  # SIGKILL: most often the kernel's out-of-memory killer
STEP_LINE = re.compile(r"^step (\d+)/(\d+) \| (.*)$")  # the job's progress line (templates/script/core.py)
SEEN_LINES = 256  # other ranks' lines already shown by a rank are not shown again


@dataclass
class JobResult:
    returncode: int
    failed_rank: int | None
    tail: list[str]  # the failed rank's last lines (or the job's, for one process)
    cause: str | None = None  # what the tail most likely means, in one line


def likely_cause(tail: list[str], returncode: int) -> str | None:
    """One line saying why a job failed, read off the failed rank's last lines."""
    for pattern, text in CAUSES:
        for line in reversed(tail):
            match = pattern.search(line.strip())
            if match:
                return text.format(*match.groups())
    if returncode in KILLED or any("SIGKILL" in line or "exitcode: -9" in line for line in tail):
        return "a process was killed (often the out-of-memory killer: host RAM ran out; see `qcompile plan`)"
    return None


def default_cache_dir() -> Path:
    """Where JIT-built DeepSpeed ops are kept between runs (CI restores this folder)."""
    return Path(os.environ.get("QCOMPILE_CACHE_DIR") or Path.cwd() / ".cache")


def job_env(backend_env: dict[str, str], base: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment plus what the backend needs; the caller's own values win."""
    env = dict(os.environ if base is None else base)
    for key, value in backend_env.items():
        env.setdefault(key, value)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(default_cache_dir() / "torch_extensions"))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHON"] = sys.executable
    return env


def resolve_argv(argv: list[str], resume: bool, python: str = sys.executable,
                 values: dict[str, str] | None = None) -> list[str]:
    """The command launch.sh runs for a backend's logical argv, with PYTHON set to `python` and the
    launch-time variables (`${QCOMPILE_NODE_RANK}`, ...) replaced by `values` where given."""
    head = [python, *LAUNCHERS[argv[0]]] if argv[0] in LAUNCHERS else [argv[0]]
    known = values or {}
    rest = [VARIABLE.sub(lambda m: known.get(m[0][2:-1], m[0]), arg) for arg in argv[1:]]
    return head + rest + (["--resume"] if resume else [])


def shell_word(arg: str) -> str:
    """One argument for launch.sh: quoted, except that the launch-time variables a backend may name
    expand (the text around them is restricted to characters that need no quoting)."""
    names = VARIABLE.findall(arg)
    if not names:
        return shlex.quote(arg)
    unknown = [n for n in names if n not in LAUNCH_VARIABLES]
    if unknown or not SAFE_AROUND_VARIABLES.match(VARIABLE.sub("", arg)):
        raise ValueError(f"launch argument {arg!r} names {unknown or 'variables'} with text launch.sh cannot "
                         f"pass through; only {', '.join(LAUNCH_VARIABLES)} expand")
    return f'"{arg}"'


def shell_command(argv: list[str]) -> str:
    """launch.sh's command for a backend's argv: the interpreter stays "${PYTHON:-python3}", the rest is
    quoted for the shell."""
    if argv[0] not in LAUNCHERS:
        return " ".join(shell_word(a) for a in argv)
    return " ".join([SCRIPT_PYTHON, *(shell_word(a) for a in [*LAUNCHERS[argv[0]], *argv[1:]])])


def launch_script_argv(resume: bool) -> list[str]:
    """How `qcompile run` and the tests start a build: its launch.sh, from the build directory."""
    return ["bash", "launch.sh", *(["--resume"] if resume else [])]


def node_environment(spec, node_rank: int | None = None, master_addr: str | None = None,
                     master_port: int | None = None, environ: dict[str, str] | None = None) -> dict[str, str]:
    """NODE_RANK, MASTER_ADDR and MASTER_PORT for this node's launch.sh. Options win, then the environment
    (NODE_RANK or SLURM_NODEID; MASTER_ADDR, or the first host of SLURM_JOB_NODELIST, which launch.sh
    reads itself), then the spec's hardware.rendezvous. A job on several nodes without a node rank or an
    address is refused here, before anything is written or launched."""
    environ = os.environ if environ is None else environ
    nodes = spec.hardware.nodes
    hint = f"on node K (0..{nodes - 1}) run: qcompile run SPEC --node-rank K --master-addr <node 0's host>"
    if nodes == 1:
        if node_rank not in (None, 0):
            raise UserError(f"--node-rank {node_rank}, but the spec runs on one node (hardware.nodes: 1)",
                            "leave out --node-rank, or set hardware.nodes")
        return {}
    rank = str(node_rank) if node_rank is not None else environ.get("NODE_RANK") or environ.get("SLURM_NODEID")
    if rank is None:
        raise UserError(f"hardware.nodes is {nodes}, but this node's rank is not known (no --node-rank, "
                        "NODE_RANK or SLURM_NODEID)", hint)
    if not rank.isdigit() or int(rank) >= nodes:
        raise UserError(f"node rank {rank} is not one of the job's nodes 0..{nodes - 1}", hint)
    address = master_addr or environ.get("MASTER_ADDR")
    if not address and not environ.get("SLURM_JOB_NODELIST"):
        address = spec.hardware.rendezvous.address
        if not address:
            raise UserError(f"hardware.nodes is {nodes}, but no rendezvous address is known: the nodes would "
                            "each wait on themselves", hint + ", or set MASTER_ADDR or hardware.rendezvous.address")
    port = master_port or environ.get("MASTER_PORT") or spec.hardware.rendezvous.port
    return {"NODE_RANK": str(int(rank)), **({"MASTER_ADDR": address} if address else {}), "MASTER_PORT": str(port)}


def run_job(build_dir: Path, argv: list[str], env: dict[str, str],
            echo: Callable[[str], None] = print, pass_fds: tuple[int, ...] = ()) -> JobResult:
    """Start the launcher in its own process group, echo every line, keep a tail per rank. Once a worker
    has failed, the launcher's own lines (its traceback, its summary) are kept but not echoed. `pass_fds`
    stay open in the launcher: the run lock's descriptor, so the lock lives as long as the job does."""
    tails: dict[int, deque] = {}
    failed_rank = None
    process = subprocess.Popen(argv, cwd=build_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, errors="replace", bufsize=1, start_new_session=True, pass_fds=pass_fds)
    try:
        for line in process.stdout:
            line = line.rstrip("\n")
            match = RANK_PREFIX.match(line)
            rank, text = (int(match[1]), match[2]) if match else (-1, line)
            if match or failed_rank is None:
                echo(line)
            tails.setdefault(rank, deque(maxlen=TAIL_LINES)).append(text)
            failure = FAILED_RANK.search(line)
            if failure and failed_rank is None:
                failed_rank = int(failure[2])
        returncode = process.wait()
    except KeyboardInterrupt:
        os.killpg(process.pid, signal.SIGINT)  # torchrun forwards it to its workers' own sessions
        process.wait()
        raise
    if returncode == 0:
        return JobResult(0, None, [])
    if failed_rank is None and len(tails) > 1:
        failed_rank = min(r for r in tails if r >= 0)
    tail = list(tails.get(failed_rank if failed_rank is not None else -1) or tails.get(-1) or [])
    return JobResult(returncode, failed_rank, tail, likely_cause(tail, returncode))


class ProgressView:
    """What the user sees of the job's output: rank 0's lines without torchrun's `[default0]:` prefix,
    another rank's line only when no rank has shown the same text (marked `rank N:`), and on a terminal
    the step lines as one tqdm bar with its ETA (plain lines otherwise, or without tqdm)."""

    def __init__(self, echo: Callable[[str], None] = print, tty: bool | None = None):
        self.echo, self.bar, self.seen = echo, None, deque(maxlen=SEEN_LINES)
        self.tty = sys.stdout.isatty() if tty is None else tty

    def __call__(self, line: str) -> None:
        match = RANK_PREFIX.match(line)
        rank, text = (int(match[1]), match[2]) if match else (None, line)
        if rank not in (None, 0):
            if text in self.seen or not text.strip():
                return
            text = f"rank {rank}: {text}"
        self.seen.append(match[2] if match else text)
        step = STEP_LINE.match(text)
        if step and self.tty and self._bar(int(step[1]), int(step[2]), step[3]):
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            self.echo(text)

    def _bar(self, done: int, total: int, rest: str) -> bool:
        if self.bar is None:
            try:
                from tqdm import tqdm
            except ImportError:
                return False
            self.bar = tqdm(total=total, unit="step", dynamic_ncols=True, initial=done - 1)
        self.bar.total = total
        self.bar.update(done - self.bar.n)
        self.bar.set_postfix_str(" | ".join(p for p in rest.split(" | ") if not p.startswith(("elapsed", "eta"))))
        return True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def check_trackers(spec) -> None:
    """training.report_to names trackers this Python can import, or the run stops before launch."""
    import importlib.util

    missing = [t for t in spec.training.report_to if importlib.util.find_spec(TRACKER_PACKAGES[t]) is None]
    if missing:
        raise UserError(f"training.report_to names {', '.join(missing)}, which is not installed in {sys.executable}",
                        f"pip install {' '.join(TRACKER_PACKAGES[t] for t in missing)}, or remove it from report_to")


def after_run(output_dir: Path, echo: Callable[[str], None] = print, build_dir: Path | None = None,
              started: float | None = None) -> None:
    """What `qcompile run` adds once the job has ended (finished or not): loss.svg from metrics.jsonl, and
    summary.json from what the ranks left when the job ended without writing one (a rank killed, say by
    the out-of-memory killer)."""
    from .loss_picture import write_loss_svg

    if build_dir is not None and started is not None:
        _summary_if_missing(output_dir, build_dir, started, echo)
    try:
        picture = write_loss_svg(output_dir)
    except OSError as exc:
        echo(f"warning: loss.svg not written: {exc.strerror or exc}")
        return
    if picture is not None:
        echo(f"loss curve: {picture}")


def _summary_if_missing(output_dir: Path, build_dir: Path, started: float, echo: Callable[[str], None]) -> None:
    import json
    import time

    from qcompile.templates.script.summary import build_summary, summary_table, write_summary

    summary = output_dir / "summary.json"
    if not output_dir.is_dir() or (summary.exists() and summary.stat().st_mtime >= started):
        return
    try:
        config = json.loads((build_dir / "train_config.json").read_text(encoding="utf-8"))
        plan_file = build_dir / "memory_plan.json"
        plan = json.loads(plan_file.read_text(encoding="utf-8")) if plan_file.exists() else None
        written = build_summary(output_dir, plan, config["accelerator"], config["world_size"], "failed",
                                "the job ended without writing its summary (a process was killed?)",
                                time.time() - started)
        write_summary(output_dir, written)
    except (OSError, ValueError, KeyError) as exc:
        echo(f"warning: summary.json not written: {exc}")
        return
    for line in summary_table(written):
        echo(line)
