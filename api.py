"""The public Python API, for tools that embed the check (the `qcompile validate` command is built on it).

    import qcompile

    diagnostics = qcompile.validate(["specs/"])          # every problem in every spec, sorted
    if any(d.is_error for d in diagnostics): ...
    plans = qcompile.plan("specs/llama.yaml")            # the memory plan of its backend

Nothing here imports torch; pydantic and the planner are imported on first use, not by `import qcompile`.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

from qcompile.compiler.diagnostics import Diagnostic, SpecError, error

if TYPE_CHECKING:
    from qcompile.compiler.planner.plan import Plan

PathLike = Union[str, "os.PathLike[str]"]
SPEC_GLOBS: tuple[str, ...] = ("*.yaml", "*.yml")

__all__ = ["SPEC_GLOBS", "FileReport", "check", "find_specs", "plan", "validate"]


@dataclass(frozen=True)
class FileReport:
    """One input's outcome: a spec file, or a folder in which no spec was found."""

    path: Path
    diagnostics: tuple[Diagnostic, ...]

    @property
    def valid(self) -> bool:
        """No error (warnings allowed)."""
        return not any(d.is_error for d in self.diagnostics)


def _matches(rel: str, name: str, globs: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(rel, g) or fnmatch.fnmatchcase(name, g) for g in globs)


def _walk(folder: Path, include: Sequence[str], exclude: Sequence[str]) -> tuple[list[Path], list[Diagnostic]]:
    """Spec files under a folder, recursively, in sorted order; hidden folders and symlinked folders skipped."""
    found: list[Path] = []
    problems: list[Diagnostic] = []

    def unreadable(exc: OSError) -> None:
        where = exc.filename or str(folder)
        problems.append(error((), f"cannot read the folder: {exc.strerror or exc}", "spec_unreadable")
                        .at(str(where), None, None))

    for root, dirs, files in os.walk(folder, onerror=unreadable):
        base = Path(root)
        rel_root = base.relative_to(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not _matches((rel_root / d).as_posix(), d, exclude))
        for name in sorted(files):
            rel = (rel_root / name).as_posix()
            if _matches(rel, name, include) and not _matches(rel, name, exclude):
                found.append(base / name)
    return found, problems


def find_specs(paths: Iterable[PathLike], include: Sequence[str] = SPEC_GLOBS,
               exclude: Sequence[str] = ()) -> tuple[list[Path], list[FileReport]]:
    """The spec files that `paths` stand for (each once, in order), and a report for each folder holding none.

    A file is taken as named, whatever its name. A folder stands for the files under it (recursively;
    hidden folders are skipped) whose name or folder-relative path matches an `include` glob and no
    `exclude` glob; `*` also matches `/`, so `legacy/*` excludes everything under legacy/."""
    files: list[Path] = []
    empty: list[FileReport] = []
    for raw in paths:
        path = Path(raw)
        try:
            is_dir = path.is_dir()
        except OSError:  # a name too long, a loop: load_spec reports it as that file's error
            is_dir = False
        if not is_dir:
            files.append(path)
            continue
        found, problems = _walk(path, include, exclude)
        files += found
        if problems:
            empty += [FileReport(Path(d.file or path), (d,)) for d in problems]
        if not found:
            message = f"no spec file found (looked for {', '.join(include)} in the folder and below)"
            hint = "name the files, or change --include / --exclude"
            empty.append(FileReport(path, (error((), message, "no_spec_found", hint).at(str(path), None, None),)))
    unique = {os.path.normpath(f): f for f in reversed(files)}  # a file named twice is checked once
    return [f for f in files if unique.get(os.path.normpath(f)) is f], empty


def _check_file(path: Path, memory_check: bool, data_check: bool = True) -> FileReport:
    from qcompile.compiler.data_checks import row_diagnostics
    from qcompile.compiler.load import load_spec

    try:
        loaded = load_spec(path, memory_check=memory_check)
        diagnostics = list(loaded.warnings)
        if data_check:
            diagnostics += row_diagnostics(loaded.spec, loaded.spec_dir)
    except SpecError as exc:
        diagnostics = exc.diagnostics
    return FileReport(path, tuple(diagnostics))


def check(paths: Iterable[PathLike], *, memory_check: bool = True, include: Sequence[str] = SPEC_GLOBS,
          exclude: Sequence[str] = (), data_check: bool = True) -> list[FileReport]:
    """One report per spec file (in the order found), then one per folder where no spec was found.

    Never raises for a bad or unreadable spec: that is the file's report. `memory_check=False` skips the
    memory-budget check (the architecture is still checked when it is known); `data_check=False` skips
    reading the rows of local JSON / JSON lines data."""
    files, empty = find_specs(paths, include, exclude)
    return [_check_file(f, memory_check, data_check) for f in files] + empty


def validate(paths: Iterable[PathLike], *, memory_check: bool = True, include: Sequence[str] = SPEC_GLOBS,
             exclude: Sequence[str] = ()) -> list[Diagnostic]:
    """Every diagnostic (errors and warnings) of every spec under `paths`, in report order.

    A spec is valid when none of its diagnostics `is_error`; a folder with no spec yields one error.
    Each Diagnostic has `file`, `line`, `col` (1-based, or None), `severity`, `path`, `message`,
    `code`, `hint` and `text()` for the compiler-style line."""
    return [d for report in check(paths, memory_check=memory_check, include=include, exclude=exclude)
            for d in report.diagnostics]


def plan(spec: PathLike, backend: str | None = None) -> list[Plan]:
    """The memory plan of a spec: for its backend (`auto`: the one chosen, or every candidate when none
    fits), or for `backend` (a kind, `auto`, or `all` for every backend, fastest first).

    Raises SpecError for a spec that does not load or whose model architecture is unknown. A plan that
    does not fit is returned, not raised: `plan.fits`, `plan.reasons`, `plan.to_json()`."""
    from qcompile.backends import all_backends
    from qcompile.compiler.choose import choose_backend
    from qcompile.compiler.load import load_spec

    loaded = load_spec(spec, memory_check=False, choose=False)
    ctx = loaded.context
    if ctx.arch is None:
        problem = ctx.arch_problem
        raise loaded.error([error(("model",), problem.message, "architecture_unknown", problem.hint)])
    kind = backend or loaded.spec.backend.kind
    if kind in ("all", "auto"):
        chosen, considered = choose_backend(ctx)
        if kind == "auto" and chosen is not None:
            considered = [c for c in considered if c.backend is chosen]
        return [c.plan for c in considered]
    if kind not in all_backends():
        raise SpecError([error(("backend",), f"unknown backend {kind!r}", "unknown_backend",
                               f"use all, auto or one of {', '.join(all_backends())}").at(str(spec), None, None)])
    return [ctx.plan_for(all_backends()[kind])]
