"""Where a run may write: the path rules for `training.output_dir` and `backend.offload_folder` that need
no more than the spec (validate, --emit and run check them; run_guard checks what is on disk).

A run never writes into the filesystem root, a system directory, the home directory itself, the model's
folder, the spec's folder, a folder holding the data file, or a path that is a file. `..` and symlinks
are resolved first, so `runs/../../etc` is /etc. A relative offload_folder stays inside output_dir.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from qcompile.backends.registry import get_backend
from qcompile.schemas._base import check_path

from .diagnostics import Diagnostic, error

# Never written into, nor anywhere below them.
SYSTEM_TREES = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/dev", "/proc",
                "/sys", "/System", "/Library", "/private/etc", "/private/var/db")
# Never written into themselves (their subfolders are ordinary places for runs).
SYSTEM_DIRS = ("/", "/home", "/root", "/var", "/var/lib", "/var/log", "/var/tmp", "/tmp", "/opt", "/srv", "/mnt",
               "/media", "/run", "/Users", "/Volumes", "/private", "/private/tmp", "/private/var")


class PathUnusable(ValueError):
    """A path from the spec that cannot even be looked at (an unknown ~user)."""


def expand(name: str) -> str:
    if name.startswith("~"):
        expanded = os.path.expanduser(name)
        if expanded.startswith("~"):
            raise PathUnusable(f"cannot expand {name.split('/')[0]!r}: no such user")
        return expanded
    return name


def resolve(name: str, base: Path) -> Path:
    """Absolute, `~` expanded, `..` and symlinks resolved: the place the OS will really write."""
    path = expand(name)
    return Path(os.path.realpath(os.path.join(base, path)))


def _lexical(name: str, base: Path) -> Path:
    return Path(os.path.normpath(os.path.join(base, expand(name))))


def inside(path: Path, folder: Path) -> bool:
    """path is folder or below it (is_relative_to compares parts once; `folder in path.parents` built every
    parent and was a third of validating 1,000 specs)."""
    return path.is_relative_to(folder)


def offload_setting(spec) -> tuple[str, tuple[str, ...]] | None:
    """The backend's disk-offload folder (relative to output_dir) and its spec key, or None."""
    return None if spec.backend.kind == "auto" else get_backend(spec.backend.kind).offload_folder(spec)


@dataclass(frozen=True)
class RunPaths:
    output_dir: Path
    offload_dir: Path | None  # None when the backend never offloads to disk
    offload_key: tuple[str, ...]  # where the spec sets it (for diagnostics)
    data_file: Path | None  # None for a hub dataset
    model_dirs: tuple[Path, ...]  # the local model folder and model.config's folder, when local
    spec_dir: Path


def run_paths(spec, spec_dir: Path) -> RunPaths:
    """The paths a run of `spec` writes to and reads from, as the backends resolve them."""
    spec_dir = Path(os.path.realpath(spec_dir))
    output = resolve(spec.training.output_dir, spec_dir)
    offload, key = None, ("backend",)
    folder = offload_setting(spec)
    if folder is not None:
        name, key = folder
        offload = Path(os.path.realpath(output / expand(name)))
    models = []
    for name in (spec.model.name, spec.model.config):
        if name:
            try:
                path = resolve(name, spec_dir)
            except (PathUnusable, OSError, ValueError):
                continue
            if os.path.isfile(path):
                path = path.parent
            if os.path.isdir(path):
                models.append(path)
    data = resolve(spec.data.path, spec_dir) if spec.data.path is not None else None
    return RunPaths(output, offload, key, data, tuple(models), spec_dir)


def _system(path: Path, lexical: Path) -> str | None:
    home = os.path.realpath(os.path.expanduser("~"))
    for candidate in {path, lexical}:
        text = str(candidate)
        if text == home:
            return "your home directory"
        if text in SYSTEM_DIRS or candidate == Path(candidate.anchor):
            return "a system directory" if text != "/" else "the filesystem root"
        if any(text == tree or text.startswith(tree + "/") for tree in SYSTEM_TREES):  # both normalised
            return "a system directory"
    return None


def _target_problems(path: Path, lexical: Path, paths: RunPaths, spec_file_dir: Path) -> str | None:
    """Why a run must not write into `path`, or None."""
    why = _system(path, lexical)
    if why:
        return f"{path} is {why}; a run writes only into a folder of its own"
    if os.path.lexists(path) and not os.path.isdir(path):
        return f"{path} exists and is not a directory"
    for parent in path.parents:
        if os.path.lexists(parent) and not os.path.isdir(parent):
            return f"{parent} is a file, so {path} cannot be a directory"
        if os.path.isdir(parent):
            break
    for model in paths.model_dirs:
        if inside(model, path):
            what = "is the model's folder" if model == path else f"holds the model's folder {model}"
            return f"{path} {what}; the run's files would replace the model's"
    if paths.data_file is not None and inside(paths.data_file, path):
        return f"{path} holds the data file {paths.data_file}; the run could overwrite it"
    if inside(spec_file_dir, path):
        return f"{path} holds the spec itself; the run's files would mix with your own"
    return None


def output_diagnostics(spec, spec_dir: Path) -> list[Diagnostic]:
    """Errors for an output_dir or offload_folder a run must not write into (no disk writes, no reads
    beyond stat)."""
    where = ("training", "output_dir")
    hint = "set training.output_dir to a new folder of its own, e.g. runs/my-run"
    folder = offload_setting(spec)
    if folder is not None:
        try:
            check_path(folder[0])
        except ValueError as exc:
            return [error(folder[1], str(exc), "offload_folder_unusable")]
    try:
        paths = run_paths(spec, spec_dir)
        lexical = _lexical(spec.training.output_dir, Path(spec_dir))
    except PathUnusable as exc:
        return [error(where, str(exc), "output_dir_unusable", hint)]
    except (OSError, ValueError) as exc:
        return [error(where, f"cannot use this path: {exc}", "output_dir_unusable", hint)]
    out = []
    problem = _target_problems(paths.output_dir, lexical, paths, paths.spec_dir)
    if problem:
        out.append(error(where, problem, "output_dir_protected", hint))
    if folder is not None and not (problem and not os.path.isabs(expand(folder[0]))):  # in a bad output_dir: once
        out += _offload_diagnostics(folder[0], folder[1], paths)
    return out


def _offload_diagnostics(folder: str, where: tuple[str, ...], paths: RunPaths) -> list[Diagnostic]:
    offload = paths.offload_dir
    hint = "use a folder inside output_dir (the default `offload`), or an absolute path to an empty folder"
    why = _system(offload, _lexical(folder, paths.output_dir))
    if why:
        return [error(where, f"{offload} is {why}; offloaded weights need a folder of their own",
                      "offload_folder_protected", hint)]
    if not os.path.isabs(expand(folder)) and not (offload != paths.output_dir and inside(offload, paths.output_dir)):
        return [error(where, f"{folder!r} resolves to {offload}, outside training.output_dir "
                             f"{paths.output_dir}; a relative offload_folder must stay inside it",
                      "offload_folder_escapes", hint)]
    if inside(paths.output_dir, offload):
        return [error(where, f"{offload} is (or holds) training.output_dir; offloaded weights need their own "
                             "folder", "offload_folder_protected", hint)]
    problem = _target_problems(offload, _lexical(folder, paths.output_dir), paths, paths.spec_dir)
    return [error(where, problem, "offload_folder_protected", hint)] if problem else []
