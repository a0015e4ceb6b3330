"""run_guard: what `qcompile run` checks on disk before it launches anything, and the lock it holds.

- training.output_dir (and an offload folder outside it) must be missing, empty, or marked by qcompile
  as a run (MARKER, written when a run starts). Anything else is refused: the run would overwrite files
  qcompile did not write.
- A second run on a live output_dir is refused at once: the first holds an exclusive `flock` on LOCK for
  its whole life, and the kernel drops it when that process dies, even by kill -9.
- MARKER records the spec's sha256 and the values a run was started with. Without --resume, a marked
  folder that already holds progress is refused; with --resume the spec is compared with the record:
  a value in FIXED changed is refused with a diff, any other change is applied and reported.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from qcompile import __version__
from qcompile.errors import QcompileError

from .output_rules import RunPaths, inside, run_paths

MARKER = ".qcompile-run.json"
OFFLOAD_MARKER = ".qcompile-offload.json"
LOCK = ".qcompile-run.lock"
GENERATOR = "qcompile"
CHECKPOINTS, COMMITTED = "checkpoints", "QCOMPILE_COMPLETE"  # as the generated train.py writes them

# Values a resumed run cannot change. The checkpoint holds tensors of the LoRA shape, the optimizer
# and scheduler states (a new learning rate, decay, warm-up or schedule would be silently ignored),
# the data order (seed, batch sizes, world size) and the position in the data (same file, same format).
FIXED = {
    "model.name": "the checkpoint holds adapters of this model",
    "model.revision": "the checkpoint holds adapters of this model",
    "model.dtype": "the checkpoint holds adapters of this model",
    "lora.r": "the adapter shapes are in the checkpoint",
    "lora.alpha": "the adapter scaling was trained with it",
    "lora.target_modules": "the adapter shapes are in the checkpoint",
    "lora.layers": "the adapter shapes are in the checkpoint",
    "backend.kind": "each backend writes its own checkpoint layout",
    "world_size": "the optimizer state is partitioned over the ranks",
    "data.path": "the run resumes at a position in this data",
    "data.format": "the run resumes at a position in this data",
    "data.sha256": "the run resumes at a position in this data",
    "strategies.max_seq_length": "the samples already seen were cut at this length",
    "strategies.mixed_precision": "the optimizer state was kept in this precision",
    "training.micro_batch_size": "the data order and position depend on it",
    "training.gradient_accumulation_steps": "the data order and position depend on it",
    "training.seed": "the data order depends on it",
    "training.learning_rate": "the optimizer and scheduler state come from the checkpoint",
    "training.weight_decay": "the optimizer and scheduler state come from the checkpoint",
    "training.warmup_steps": "the optimizer and scheduler state come from the checkpoint",
    "training.lr_scheduler": "the optimizer and scheduler state come from the checkpoint",
}
# Not part of what a run is: the memory budget only decides whether it fits.
IGNORED = ("hardware.device_memory", "hardware.host_memory", "hardware.disk", "hardware.gpu", "training.output_dir")


class RunRefused(QcompileError):
    """The run must not start (exit 1); `notes` are extra lines (a diff), `hint` what to do."""


@dataclass
class RunStart:
    """What check_run found: the paths, the values to record and the changes a resume applies."""

    paths: RunPaths
    values: dict
    spec_sha256: str
    spec_file: str
    resume: bool
    applied: list[str] = field(default_factory=list)
    lock_fd: int | None = None

    def release(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # closing the last descriptor drops the flock
            self.lock_fd = None


# --------------------------------------------------------------------------- values


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def file_sha256(path: Path | None) -> str | None:
    """The data's sha256; a folder (save_to_disk) hashes its files in name order; None for hub data."""
    if path is None:
        return None
    digest = hashlib.sha256()
    files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
    for file in files:
        with open(file, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def run_values(spec, backend_kind: str, paths: RunPaths) -> dict:
    """The values a run is started with, flat (`lora.r`), with `backend: auto` resolved."""
    dumped = spec.model_dump(mode="json")
    backend = dumped.pop("backend")
    values = _flatten(dumped)
    if backend.get("kind") == backend_kind:
        values.update(_flatten(backend, "backend."))
    values["backend.kind"] = backend_kind
    values["data.path"] = str(paths.data_file) if paths.data_file is not None else None
    values["data.sha256"] = file_sha256(paths.data_file)
    values["world_size"] = spec.hardware.nodes * spec.hardware.devices_per_node
    for key in IGNORED:
        values.pop(key, None)
    return dict(sorted(values.items()))


def _shown(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def compare(old: dict, new: dict) -> tuple[list[str], list[str]]:
    """(refused, applied): one `key: old -> new` line per changed value."""
    refused, applied = [], []
    for key in sorted(set(old) | set(new)):
        if key in IGNORED or old.get(key) == new.get(key):
            continue
        line = f"{key}: {_shown(old.get(key))} -> {_shown(new.get(key))}"
        if key in FIXED:
            refused.append(f"{line} (cannot change: {FIXED[key]})")
        else:
            applied.append(line)
    return refused, applied


# --------------------------------------------------------------------------- what is on disk


def read_marker(folder: Path, name: str = MARKER) -> dict | None:
    """The record qcompile left in `folder`, or None when there is none (or it is not ours)."""
    try:
        with open(folder / name, "rb") as fh:
            data = json.loads(fh.read(1_000_000))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) and data.get("generator") == GENERATOR else None


def _only_ours(folder: Path) -> bool:
    """True when `folder` holds nothing but qcompile's own lock file (checks at most a few entries)."""
    with os.scandir(folder) as entries:
        return all(entry.name == LOCK for entry in entries)


def _state(folder: Path, marker: str) -> str:
    """missing | empty | ours | foreign | file."""
    if not os.path.lexists(folder):
        return "missing"
    if not os.path.isdir(folder):
        return "file"
    if read_marker(folder, marker) is not None:
        return "ours"
    try:
        return "empty" if _only_ours(folder) else "foreign"
    except OSError:
        return "foreign"


def _progress(output_dir: Path) -> list[Path]:
    """Committed checkpoints, newest last."""
    folder = output_dir / CHECKPOINTS
    found = []
    if os.path.isdir(folder):
        for path in folder.glob("checkpoint-*"):
            number = path.name.split("-")[-1]
            if number.isdigit() and (path / COMMITTED).exists():
                found.append((int(number), path))
    return [p for _, p in sorted(found)]


def _finished(checkpoint: Path) -> int | None:
    """The step a checkpoint ended its run at, or None when the run was still going."""
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        return state["global_step"] if state["global_step"] >= state["max_steps"] else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _lock_holder(output_dir: Path) -> str | None:
    """The pid (as text) of a live run holding the lock, or None when nobody holds it."""
    try:
        fd = os.open(output_dir / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
        return holder
    finally:
        os.close(fd)
    return None


# --------------------------------------------------------------------------- the two steps


def check_run(loaded, resume: bool) -> RunStart:
    """Everything `qcompile run` must know before it writes anything: raise RunRefused, or say what
    starting the run will record. Reads only."""
    spec, backend_kind = loaded.context.spec, loaded.context.backend.kind
    paths = run_paths(spec, loaded.spec_dir)
    output = paths.output_dir
    hint_new = "choose another training.output_dir (a missing or empty folder)"
    state = _state(output, MARKER)
    if state == "file":
        raise RunRefused(f"training.output_dir {output} exists and is not a directory", hint_new)
    if state == "foreign":
        raise RunRefused(f"training.output_dir {output} is not empty and holds no qcompile run; refusing to "
                         "write into it", f"{hint_new}, or move its files away")
    holder = _lock_holder(output) if state != "missing" else None
    if holder is not None:
        raise RunRefused(f"another qcompile run (pid {holder}) is training into {output}; refusing to start a "
                         "second one there", f"wait for it to finish, or stop it; or {hint_new}")
    offload = paths.offload_dir
    if offload is not None and not inside(offload, output) and _state(offload, OFFLOAD_MARKER) in ("file", "foreign"):
        raise RunRefused(f"offload folder {offload} is not empty and qcompile did not create it; refusing to "
                         "write into it", "set backend.offload_folder to a missing or empty folder")
    _writable(output)
    if offload is not None:
        _writable(offload)
    start = RunStart(paths, run_values(spec, backend_kind, paths), hashlib.sha256(loaded.source).hexdigest(),
                     loaded.path.name, resume)
    checkpoints = _progress(output) if state == "ours" else []
    has_adapter = state == "ours" and os.path.exists(output / "adapter_model.safetensors")
    if not resume and (checkpoints or has_adapter):
        raise RunRefused(f"{output} already holds checkpoints of a run; resume it with --resume or choose another "
                         "training.output_dir")
    if resume and checkpoints:
        record = read_marker(output) or {}
        refused, applied = compare(record.get("values") or {}, start.values)
        if refused:
            raise RunRefused(f"cannot resume the run in {output}: the spec changed values a resumed run cannot "
                             "change", "restore these values, or start a new run in another training.output_dir",
                             tuple(refused))
        grows = [line for line in applied if line.startswith(("training.max_steps", "training.epochs"))]
        end = _finished(checkpoints[-1]) if checkpoints and grows else None
        if end is not None:
            raise RunRefused(f"the run in {output} finished at step {end}; a finished run is not extended",
                             "start a new run in another training.output_dir", tuple(grows))
        start.applied = applied
    return start


def _atomic_json(path: Path, data: dict) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, sort_keys=True, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def _writable(folder: Path) -> None:
    """Refuse a folder the run could not create or write (the job would fail after launch)."""
    existing = folder
    while not os.path.isdir(existing) and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunRefused(f"cannot write into {existing} (permission denied), so not into {folder} either",
                         "choose a training.output_dir you can write to")


def begin_run(start: RunStart) -> None:
    """Take the lock (held until this process exits or release()) and record the run's values."""
    try:
        _begin(start)
    except OSError as exc:
        start.release()
        raise RunRefused(f"cannot start the run in {start.paths.output_dir}: {exc.strerror or exc}",
                         "choose a training.output_dir you can write to") from None


def _begin(start: RunStart) -> None:

    output = start.paths.output_dir
    output.mkdir(parents=True, exist_ok=True)
    fd = os.open(output / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise RunRefused(f"another qcompile run started training into {output} just now; refusing to start a "
                         "second one there") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    start.lock_fd = fd
    record = {"generator": GENERATOR, "qcompile_version": __version__,
              "spec": {"file": start.spec_file, "sha256": start.spec_sha256}, "values": start.values}
    _atomic_json(output / MARKER, record)
    offload = start.paths.offload_dir
    if offload is not None and not inside(offload, output):
        offload.mkdir(parents=True, exist_ok=True)
        _atomic_json(offload / OFFLOAD_MARKER, {"generator": GENERATOR, "output_dir": str(output)})
