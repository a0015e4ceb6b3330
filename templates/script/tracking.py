"""Tracking: the Trainer's own experiment-tracker integrations (training.report_to), each rank's measured
peak memory for the summary, and the preflight's data (the longest rows, repeated, so the few steps it
runs have the real job's largest shapes)."""

import importlib.util
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.utils import logging as hf_logging

from .core import STEPS, JobError, rank, read_config, total_steps
from .summary import build_summary, summary_table, write_summary

TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
TELEMETRY = ".telemetry"  # one peaks file per rank, under output_dir
NODE_SAMPLE_S = 0.5  # how often local rank 0 adds up the node's ranks' memory
STARTED = time.time()
FLIGHT = {}  # what a preflight learns about the real run (its step count)

hf_logging.disable_progress_bar()  # per-rank "Loading weights" bars would interleave on the launcher's output


# ---------------------------------------------------------------- experiment trackers


def tracking_arguments(cfg: dict) -> dict:
    """report_to and run_name for TrainingArguments; each tracker writes under output_dir unless its own
    environment variable already says where."""
    train = cfg["training"]
    trackers = train.get("report_to") or []
    missing = [t for t in trackers if importlib.util.find_spec(TRACKER_PACKAGES[t]) is None]
    if missing:
        raise JobError(f"training.report_to names {', '.join(missing)}, which is not installed "
                       f"(pip install {' '.join(TRACKER_PACKAGES[t] for t in missing)})")
    output_dir = Path(train["output_dir"])
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(output_dir / "tensorboard"))
    os.environ.setdefault("WANDB_DIR", str(output_dir))
    if "MLFLOW_TRACKING_URI" not in os.environ:  # a file store needs no server or database driver
        os.environ["MLFLOW_TRACKING_URI"] = (output_dir / "mlruns").as_uri()
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks to opt in to it
    return {"report_to": list(trackers) or "none", "run_name": train.get("run_name") or output_dir.name}


# ---------------------------------------------------------------- measured peaks


def rss_bytes(pid: int) -> int:
    """A process's proportional set size (shared pages split between their users: the ranks' mapped copy
    of the weights counts once per node), or its RSS where smaps_rollup is missing; 0 once it has gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def node_ranks() -> list[int]:
    """This node's ranks: the processes started by this rank's parent (torchrun's agent) with the same
    command line; only this process when it is the node's only rank."""
    if int(os.environ.get("LOCAL_WORLD_SIZE", "1")) <= 1:
        return [os.getpid()]
    me = Path("/proc/self/cmdline").read_bytes()
    parent, found = os.getppid(), []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == me:
                stat = (entry / "stat").read_text(encoding="ascii")
                if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                    found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found or [os.getpid()]


class PeakMemory(TrainerCallback):
    """Each rank's peaks, written to output_dir/.telemetry/rank-N.json at every log and at the end (so a
    failed run leaves what it reached): the process's peak RSS, and on CUDA the allocator's peaks per
    device; local rank 0 also samples the sum over the node's ranks."""

    def __init__(self):
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.node_peak = 0
        self.train_start = self.train_end = None
        self.tokens_start = self.tokens_end = 0
        self.stop = threading.Event()
        if self.local_rank == 0:
            threading.Thread(target=self.sample_node, daemon=True).start()

    def sample_node(self) -> None:
        pids = None
        while not self.stop.is_set():
            pids = pids if pids and len(pids) >= int(os.environ.get("LOCAL_WORLD_SIZE", "1")) else node_ranks()
            self.node_peak = max(self.node_peak, sum(rss_bytes(p) for p in pids))
            self.stop.wait(NODE_SAMPLE_S)

    def on_train_begin(self, args, state, control, **kwargs):
        self.train_start, self.tokens_start = time.time(), state.num_input_tokens_seen or 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.train_end, self.tokens_end = time.time(), state.num_input_tokens_seen or 0
        self.write(Path(args.output_dir).parent)  # args.output_dir is output_dir/checkpoints

    def on_train_end(self, args, state, control, **kwargs):
        self.train_end, self.tokens_end = time.time(), state.num_input_tokens_seen or 0
        self.write(Path(args.output_dir).parent)

    def measured(self) -> dict:
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        record = {"rank": int(os.environ.get("RANK", "0")), "local_rank": self.local_rank,
                  "node": int(os.environ.get("GROUP_RANK", os.environ.get("NODE_RANK", "0"))),
                  "local_world_size": int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
                  "peak_rss_bytes": peak_rss, "cuda": []}
        if self.local_rank == 0:
            record["node_peak_bytes"] = max(self.node_peak, peak_rss)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            record["cuda"] = [{"device": d, "allocated_bytes": torch.cuda.max_memory_allocated(d),
                               "reserved_bytes": torch.cuda.max_memory_reserved(d)}
                              for d in range(torch.cuda.device_count()) if torch.cuda.max_memory_reserved(d)]
        if self.train_start is not None and self.train_end is not None:
            record["train_s"] = self.train_end - self.train_start
            record["tokens_this_run"] = self.tokens_end - self.tokens_start
        return record

    def write(self, output_dir: Path) -> None:
        path = output_dir / TELEMETRY / f"rank-{os.environ.get('RANK', '0')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(self.measured(), sort_keys=True) + "\n", encoding="utf-8")
        os.replace(temporary, path)


PEAKS = PeakMemory()  # started with the process, so the load's peak counts


# ---------------------------------------------------------------- the end of a run


def process_seconds() -> float:
    """Seconds since this process started (its imports included), from /proc."""
    try:
        ticks = int(Path("/proc/self/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in open("/proc/stat", encoding="ascii") if line.startswith("btime"))
        return time.time() - (boot + ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time() - STARTED


def finish_run(config_path: Path, error: str | None) -> None:
    """Every rank writes its peaks; rank 0 writes summary.json and prints the table, after a failure too
    (with what the run reached). A problem here is reported, never raised over the job's own result."""
    try:
        cfg = read_config(config_path)
        output_dir = Path(cfg["training"]["output_dir"])
        PEAKS.stop.set()
        PEAKS.write(output_dir)
        if error is None and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every rank's peaks are on disk before rank 0 reads them
        if rank() != 0:
            return
        plan_file = config_path.parent / "memory_plan.json"
        plan = json.loads(plan_file.read_text(encoding="utf-8")) if plan_file.exists() else None
        summary = build_summary(output_dir, plan, cfg["accelerator"], cfg["world_size"],
                                "completed" if error is None else "failed", error, process_seconds())
        if cfg.get("preflight"):
            summary["preflight"] = {**cfg["preflight"], **FLIGHT}
        write_summary(output_dir, summary)
        print("\n".join(summary_table(summary)), flush=True)
    except Exception as exc:  # the summary is a report: it must not turn a finished run into a failed one
        print(f"warning: no summary written: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- preflight


def longest_rows(build: Callable):
    """STEPS.build_data for a preflight (train_config.json's `preflight` section): the rows of the largest
    global micro-batch, longest first, repeated to fill the steps the preflight runs; eval rows kept as
    they are. It records the real run's step count first, for the time estimate."""

    def build_data(cfg: dict, tokenizer):
        train, evaluation = build(cfg, tokenizer)
        flight = cfg.get("preflight")
        if not flight:
            return train, evaluation
        real = {**cfg, "training": {**cfg["training"], "max_steps": flight["run_max_steps"]}}
        FLIGHT["run_total_steps"] = total_steps(real, len(train))
        FLIGHT["stop_at"] = flight.get("stop_at")
        per_step = cfg["training"]["micro_batch_size"] * cfg["world_size"]
        longest = sorted(train, key=lambda row: len(row["input_ids"]), reverse=True)[:per_step]
        needed = per_step * cfg["training"]["gradient_accumulation_steps"] * (cfg["training"]["max_steps"] + 1)
        return [longest[i % len(longest)] for i in range(needed)], evaluation

    return build_data


class StopForPreflight(TrainerCallback):
    """A preflight's first launch stops at its checkpoint step, one short of max_steps, so the second
    launch has a step left to resume into."""

    def on_step_end(self, args, state, control, **kwargs):
        if FLIGHT.get("stop_at") and state.global_step >= FLIGHT["stop_at"]:
            control.should_save = control.should_training_stop = True


STEPS.tracking_arguments = tracking_arguments
STEPS.callbacks += [PEAKS, StopForPreflight()]
STEPS.finish = finish_run
STEPS.build_data = longest_rows(STEPS.build_data)
