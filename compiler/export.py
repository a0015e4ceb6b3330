"""`qcompile export`'s plan: which adapter, which base weights, where the merged model goes, how much host
RAM each way of merging needs and which one the spec's host budget allows. Light core: no torch here
(the merge itself is compiler/merge.py, imported by the command only when it merges).

- The adapter is the run's final one (training.output_dir/adapter_*), never while a run holds that
  folder's lock; its adapter_config.json says the method (lora, rslora, dora, adalora); any other peft
  type is refused.
- The base is always merged unquantised (model.quantization only says how the run loaded it) in
  model.dtype, the dtype the run's frozen weights had.
- In memory (peft's merge_and_unload) needs the whole model plus the largest shard being serialised;
  shard by shard needs the largest shard twice (read and serialised) plus one tensor. When neither fits
  hardware.host_memory, the export is refused with both figures.
- The output folder is written only when missing, empty or written by an earlier export (MARKER lists
  its files with their size and mtime); a file the user changed or added there stops the export.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

from qcompile.errors import OutputError, UserError
from qcompile.schemas.units import format_bytes

from .output_rules import PathUnusable, _target_problems, expand, inside, run_paths
from .planner.architecture import DTYPE_BYTES
from .planner.memory import HOST_PER_PROCESS
from .run_guard import _lock_holder

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
MARKER = ".qcompile-export.json"
GENERATOR = "qcompile"
DEFAULT_SUBDIR = "merged"
INDEX = "model.safetensors.index.json"
MODES = ("auto", "memory", "shards")
# peft features the shard-by-shard arithmetic does not reproduce; peft's own merge (in memory) handles them.
SHARD_UNSUPPORTED = {
    "fan_in_fan_out": "fan_in_fan_out (Conv1D) weights",
    "modules_to_save": "modules_to_save (fully trained modules)",
    "rank_pattern": "a per-module rank_pattern on a LoRA adapter",
    "alpha_pattern": "a per-module alpha_pattern",
    "trainable_token_indices": "trainable token indices",
    "target_parameters": "target_parameters",
}
SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                           "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass(frozen=True)
class Shard:
    name: str
    params: int  # floating-point elements (converted to the merged dtype)
    other_bytes: int  # non-floating tensors, copied as they are
    floating: dict[str, int]  # key -> elements of each floating-point tensor


@dataclass
class ExportPlan:
    spec_file: Path
    base: Path  # a local folder with the base's config, weights and tokenizer
    adapter: Path
    out_dir: Path
    method: str  # lora, rslora, dora or adalora, from adapter_config.json
    dtype: str
    quantized: str | None  # how the run loaded the base ("4-bit"), merged here unquantised
    params: int  # the base's parameter count (the planner's architecture figure when it has one)
    shards: list[Shard]
    budget: int
    adapter_bytes: int  # the adapter as peft holds it: fp32, at most twice its (bf16) file
    shard_problem: str | None  # why shard by shard cannot be used, or None
    targets: tuple[str, ...] = ()  # the base weight keys the adapter changes
    previous: list[str] = field(default_factory=list)  # files of an earlier export to replace
    mode: str = "auto"

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def runtime(self) -> int:
        return HOST_PER_PROCESS["cpu"]  # python, torch, transformers, peft

    @property
    def weight_bytes(self) -> int:
        return self.params * self.dtype_bytes

    @property
    def largest_shard_bytes(self) -> int:
        return max((s.params * self.dtype_bytes + s.other_bytes for s in self.shards), default=self.weight_bytes)

    @property
    def merge_transient_bytes(self) -> int:
        """The fp32 temporaries of merging the largest adapted weight: the update B @ A (lora, adalora);
        DoRA also holds W + update, its column norms' input and the rescaled result."""
        largest = max((s.floating.get(key, 0) for s in self.shards for key in self.targets), default=0)
        return largest * 4 * (4 if self.method == "dora" else 1)

    @property
    def in_memory_bytes(self) -> int:
        """The unquantised model, the fp32 adapter (loaded and applied), the merge's temporaries and one
        shard being serialised."""
        return (self.weight_bytes + 2 * self.adapter_bytes + self.merge_transient_bytes + self.largest_shard_bytes
                + self.runtime)

    @property
    def by_shard_bytes(self) -> int:
        """One shard held merged, its serialised copy, the merge's temporaries and the adapter."""
        return 2 * self.largest_shard_bytes + self.merge_transient_bytes + self.adapter_bytes + self.runtime

    @property
    def output_bytes(self) -> int:
        return sum(s.params * self.dtype_bytes + s.other_bytes for s in self.shards) or self.weight_bytes

    def choose(self, mode: str) -> str:
        """memory or shards, as asked or (auto) the faster one the host budget allows; refuses otherwise."""
        fits_memory = self.in_memory_bytes <= self.budget
        fits_shards = self.shard_problem is None and self.by_shard_bytes <= self.budget
        if mode == "memory" and not fits_memory:
            raise UserError(f"merging in memory needs {format_bytes(self.in_memory_bytes)} of host RAM; "
                            f"hardware.host_memory is {format_bytes(self.budget)}", self._hint(fits_shards))
        if mode == "shards" and self.shard_problem is not None:
            raise UserError(f"cannot merge shard by shard: {self.shard_problem}", "use --mode memory")
        if mode == "shards" and not fits_shards:
            raise UserError(f"merging shard by shard needs {format_bytes(self.by_shard_bytes)} of host RAM "
                            f"(largest shard {format_bytes(self.largest_shard_bytes)}); hardware.host_memory is "
                            f"{format_bytes(self.budget)}", "re-shard the base into smaller safetensors files, or "
                            "export on a machine with more RAM (and raise hardware.host_memory)")
        if mode == "auto":
            if fits_memory:
                mode = "memory"
            elif fits_shards:
                mode = "shards"
            else:
                shards = (f"shard by shard {format_bytes(self.by_shard_bytes)}" if self.shard_problem is None
                          else f"shard by shard impossible ({self.shard_problem})")
                raise UserError(f"the merge does not fit hardware.host_memory ({format_bytes(self.budget)}): in "
                                f"memory {format_bytes(self.in_memory_bytes)} ({self.params:,} parameters as "
                                f"{self.dtype}), {shards}",
                                "export on a machine with more RAM (and raise hardware.host_memory), or re-shard "
                                "the base into smaller safetensors files")
        self.mode = mode
        return mode

    def _hint(self, fits_shards: bool) -> str:
        return ("use --mode shards (bounded by the largest shard), or --mode auto" if fits_shards
                else "export on a machine with more RAM (and raise hardware.host_memory)")

    def text(self) -> str:
        quant = f"; the run's {self.quantized} base is merged unquantised" if self.quantized else ""
        chosen = {"memory": "in memory (peft merge_and_unload)", "shards": "shard by shard"}.get(self.mode, self.mode)
        return (f"export: {self.method} adapter {self.adapter} + base {self.base} -> {self.out_dir}\n"
                f"  weights: {self.params:,} parameters as {self.dtype} = {format_bytes(self.weight_bytes)} in "
                f"{len(self.shards) or 1} shard(s), largest {format_bytes(self.largest_shard_bytes)}{quant}\n"
                f"  host RAM: in memory {format_bytes(self.in_memory_bytes)}, shard by shard "
                f"{format_bytes(self.by_shard_bytes) if self.shard_problem is None else 'n/a'}; budget "
                f"{format_bytes(self.budget)} -> {chosen}")


# ---------------------------------------------------------------- the adapter


def adapter_method(config: dict, source: Path) -> str:
    """lora, rslora, dora or adalora from a peft adapter_config.json; anything else cannot be exported."""
    kind = config.get("peft_type")
    if kind == "ADALORA":
        return "adalora"
    if kind != "LORA":
        raise UserError(f"{source}: a {kind} adapter cannot be merged by qcompile export",
                        "export supports lora, rslora, dora and adalora adapters (peft LORA/ADALORA)")
    if config.get("use_dora"):
        return "dora"
    return "rslora" if config.get("use_rslora") else "lora"


def _shard_problem(config: dict) -> str | None:
    for key, what in SHARD_UNSUPPORTED.items():
        if key == "rank_pattern" and config.get("peft_type") == "ADALORA":
            continue  # AdaLoRA saves its pruned shapes with their pattern; the arithmetic is the same
        if config.get(key):
            return f"the adapter uses {what}"
    if config.get("lora_bias") or config.get("bias", "none") != "none":
        return "the adapter trains biases"
    if config.get("peft_type") == "LORA" and config.get("use_dora") and config.get("fan_in_fan_out"):
        return "DoRA on fan_in_fan_out weights"
    return None


def adapted_weights(adapter_weights: Path) -> tuple[str, ...]:
    """The base weight keys an adapter file changes, from its safetensors header alone."""
    keys = set()
    for key in _safetensors_header(adapter_weights):
        name = key.removeprefix("base_model.model.")
        for part in (".lora_A", ".lora_B"):
            if part in name:
                keys.add(name[: name.index(part)] + ".weight")
    return tuple(sorted(keys))


def _adapter(spec, spec_file: Path, spec_dir: Path) -> tuple[Path, dict]:
    from qcompile.backends.base import resolve_output_dir

    output = resolve_output_dir(spec, spec_dir)
    holder = _lock_holder(output)
    if holder is not None:
        raise UserError(f"a run (pid {holder}) is still writing {output}; its adapter is not final yet",
                        "wait for the run to end, then export")
    config_file, weights = output / ADAPTER_CONFIG, output / ADAPTER_WEIGHTS
    if not (config_file.is_file() and weights.is_file()):
        running = (output / "checkpoints").is_dir()
        raise UserError(f"no adapter in {output} yet" + (" (the run has checkpoints but did not finish)" if running
                                                        else ""),
                        f"finish the run first: qcompile run {spec_file}{' --resume' if running else ''}")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{config_file}: not a readable adapter config ({exc})", "run the training again") from None
    if not isinstance(config, dict):
        raise UserError(f"{config_file}: not an adapter config", "run the training again")
    return output, config


# ---------------------------------------------------------------- the base weights


def _base_folder(spec, spec_dir: Path) -> Path:
    """The base model's local folder: the spec's path, or the hub cache's snapshot (never downloaded here)."""
    from qcompile.backends.train_config import resolve_model

    name = resolve_model(spec.model.name, spec_dir)
    if os.path.isabs(name):
        if not Path(name).is_dir():
            raise UserError(f"model.name {name} is not a folder", "point model.name at the base model's folder")
        return Path(name)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, revision=spec.model.revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means: not in the cache
        raise UserError(f"the weights of {name} are not on this machine (hub cache)",
                        f"download them first (huggingface-cli download {name}), or set model.name to a local "
                        "folder") from None


def _safetensors_header(path: Path) -> dict:
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        if length > 100 * 2**20:
            raise ValueError("header too large")
        return json.loads(fh.read(length))


def read_shards(base: Path) -> list[Shard]:
    """Each safetensors shard's floating-point element count, other bytes and largest tensor, from the
    headers alone (no tensor is read)."""
    index = base / INDEX
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (base / "model.safetensors").is_file():
        names = ["model.safetensors"]
    else:
        return []
    shards = []
    for name in names:
        path = base / name
        if not path.is_file():
            raise UserError(f"{path} is missing (listed in {INDEX})", "download the base model's weights again")
        params = other = 0
        floating = {}
        try:
            header = _safetensors_header(path)
        except (OSError, ValueError, struct.error) as exc:
            raise UserError(f"{path}: not a readable safetensors file ({exc})",
                            "download the base model's weights again") from None
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            count = 1
            for dim in entry["shape"]:
                count *= dim
            if entry["dtype"] in ("F64", "F32", "BF16", "F16"):
                params += count
                floating[key] = count
            else:
                other += count * SAFETENSORS_DTYPE_BYTES.get(entry["dtype"], 1)
        shards.append(Shard(name, params, other, floating))
    return shards


# ---------------------------------------------------------------- the output folder


def _marked_files(out: Path) -> dict | None:
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("generator") != GENERATOR:
        return None
    if not isinstance(marker.get("files"), dict):
        return None
    return marker["files"]


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def check_output(out: Path, force: bool) -> list[str]:
    """The files of an earlier export in `out` that this one replaces; refuses a folder holding anything
    else, or an earlier export's file that has changed since (edits are never overwritten)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a directory", "choose another -o DIR")
    if not out.exists() or not any(out.iterdir()):
        return []
    files = _marked_files(out)
    if files is None:
        if force:
            return []
        raise OutputError(f"{out} is not empty and was not written by qcompile export; refusing to overwrite it",
                          "choose another -o DIR, or empty it")
    present = {p.name for p in out.iterdir()} - {MARKER}
    foreign = sorted(present - set(files))
    changed = sorted(name for name in present & set(files) if _stamp(out / name) != files[name])
    if (foreign or changed) and not force:
        names = ", ".join(str(out / n) for n in [*changed, *foreign])
        raise OutputError(f"{names} {'were' if len(foreign) + len(changed) > 1 else 'was'} not written by the "
                          "last export (added or changed since); refusing to overwrite",
                          "move your files elsewhere, choose another -o DIR, or pass --force")
    return sorted(present & set(files))


def _check_target(out: Path, spec, spec_dir: Path, base: Path, run_output: Path) -> None:
    paths = run_paths(spec, spec_dir)
    problem = _target_problems(out, out, paths, spec_dir)  # the rules of a run's output_dir, in export's words
    if problem:
        problem = problem.replace("the run's files", "the merged files").replace("a run writes", "export writes")
    if problem is None and inside(base, out):
        problem = f"{out} holds the base model's folder {base}"
    if problem is None and inside(run_output, out):
        problem = f"{out} holds the run's output_dir {run_output} (the adapter and checkpoints)"
    if problem:
        raise OutputError(problem, "choose another -o DIR")


def plan_export(spec, spec_file: Path, spec_dir: Path, arch, out_dir: str | None, force: bool = False) -> ExportPlan:
    """Everything export checks before a weight is read; raises a QcompileError for each refusal."""
    run_output, config = _adapter(spec, spec_file, spec_dir)
    method = adapter_method(config, run_output / ADAPTER_CONFIG)
    base = _base_folder(spec, spec_dir)
    if not (base / "config.json").is_file():
        raise UserError(f"{base} has no config.json", "point model.name at a complete model folder")
    try:
        base_config = json.loads((base / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{base / 'config.json'}: not readable ({exc})", "download the base model again") from None
    if isinstance(base_config, dict) and "quantization_config" in base_config:
        raise UserError(f"{base} holds pre-quantised weights; export merges into unquantised weights only",
                        "point model.name at the unquantised base (the run quantises it through model.quantization)")
    shards = read_shards(base)
    if not shards and not any(base.glob("*.bin")):
        raise UserError(f"no weights in {base} (no *.safetensors or *.bin)", "download the base model's weights")
    try:
        out = Path(os.path.realpath(os.path.join(os.getcwd(), expand(out_dir)))) if out_dir else \
            run_output / DEFAULT_SUBDIR
    except PathUnusable as exc:
        raise UserError(str(exc), "choose another -o DIR") from None
    _check_target(out, spec, spec_dir, base.resolve(), run_output.resolve())
    previous = check_output(out, force)
    params = arch.num_params() if arch is not None else sum(s.params for s in shards)
    try:
        targets = adapted_weights(run_output / ADAPTER_WEIGHTS)
    except (OSError, ValueError, struct.error) as exc:
        raise UserError(f"{run_output / ADAPTER_WEIGHTS}: not a readable safetensors file ({exc})",
                        "run the training again") from None
    held = {key for shard in shards for key in shard.floating}
    missing = [key for key in targets if key not in held] if shards else []
    if missing:
        raise UserError(f"the adapter changes {missing[0]} (and {len(missing) - 1} more), which {base} does not hold",
                        "the adapter was trained on another model: check model.name")
    quant = spec.model.quantization
    problem = _shard_problem(config) or (None if shards else "the base has no safetensors weights")
    return ExportPlan(
        spec_file=spec_file, base=base, adapter=run_output, out_dir=out, method=method, dtype=spec.model.dtype,
        quantized=f"{quant.bits}-bit" if quant is not None else None, params=params, shards=shards,
        budget=spec.hardware.host_memory, adapter_bytes=2 * (run_output / ADAPTER_WEIGHTS).stat().st_size,
        shard_problem=problem, previous=previous, targets=targets,
    )


def check_disk(plan: ExportPlan) -> None:
    """Refuse before writing when the output's file system cannot hold the merged weights."""
    folder = plan.out_dir
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < plan.output_bytes:
        raise UserError(f"the merged weights need {format_bytes(plan.output_bytes)} on disk; {folder} has "
                        f"{format_bytes(free)} free", "free some space, or choose another -o DIR")


def write_marker(out: Path, files: list[str]) -> None:
    """Record what this export wrote (size and mtime), so the next export may replace exactly these."""
    stamps = {name: _stamp(out / name) for name in sorted(files)}
    (out / MARKER).write_text(json.dumps({"generator": GENERATOR, "files": stamps}, indent=2) + "\n")
