"""The data, checked before any process starts.

File level (every command): a missing file is a warning for validate and --emit (the data may come
later) and an error for run; a device, an unreadable, empty or non-UTF-8 file, an unknown file type or a
folder that `datasets.save_to_disk` did not write is always an error (the job would only find out after
launch, on every rank). Row level (`qcompile validate`, unless --no-data-check): local JSON lines and JSON
files are streamed against the format and `data.columns`, each bad row a diagnostic at its own line and
column, with the same messages the job gives for parquet, CSV and hub data when it starts. Light core:
the row checks are the generated script's own `rows` part, which needs only the standard library."""

from __future__ import annotations

import codecs
import os
import stat
from pathlib import Path

from qcompile.templates.script.rows import scan_file

from .diagnostics import Diagnostic, error, warning
from .output_rules import PathUnusable, resolve

CHUNK = 1 << 20
WHERE = ("data", "path")
SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
TEXT_SUFFIXES = (".jsonl", ".json", ".csv")
SAVED_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")  # what save_to_disk writes
ROW_CAP = 20  # bad rows shown per file; the rest are counted


def data_file(spec, spec_dir: Path) -> Path | None:
    return resolve(spec.data.path, Path(spec_dir)) if spec.data.path is not None else None


def _first_bad_line(fh) -> int | None:
    """The 1-based line of the first byte that is not UTF-8, or None; reads the file once, in chunks."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    while chunk := fh.read(CHUNK):
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            return line + chunk.count(b"\n", 0, max(exc.start, 0))
        line += chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return line
    return None


def data_diagnostics(spec, spec_dir: Path, must_exist: bool = False) -> list[Diagnostic]:
    out = _eval_rules(spec)
    if spec.data.path is not None:
        out += _source_diagnostics(spec.data.path, WHERE, spec_dir, must_exist)
    if spec.data.eval_path is not None:
        out += _source_diagnostics(spec.data.eval_path, ("data", "eval_path"), spec_dir, must_exist)
    return out


def _eval_rules(spec) -> list[Diagnostic]:
    data, steps = spec.data, spec.training.eval_steps
    if steps is not None and not data.has_eval:
        return [error(("training", "eval_steps"), "there is no eval data to compute eval_loss on", "eval_without_data",
                      "set data.eval_fraction (e.g. 0.05) or data.eval_path, or remove training.eval_steps")]
    if steps is None and data.has_eval:
        return [warning(("data", "eval_fraction" if data.eval_fraction else "eval_path"),
                        "eval rows are held out but training.eval_steps is not set, so eval_loss is never computed",
                        "eval_never_run", "set training.eval_steps")]
    return []


def _source_diagnostics(name: str, where: tuple, spec_dir: Path, must_exist: bool) -> list[Diagnostic]:
    key = ".".join(where)
    hint = f"{key} is a .jsonl, .json, .parquet or .csv file or a save_to_disk folder; relative paths are read " \
           "from the spec's folder"
    try:
        path = resolve(name, Path(spec_dir))
        info = os.stat(path)
    except PathUnusable as exc:
        return [error(where, str(exc), "data_unusable", hint)]
    except FileNotFoundError:
        shown = resolve(name, Path(spec_dir))
        if must_exist:
            return [error(where, f"{shown} does not exist", "data_missing", hint)]
        return [warning(where, f"{shown} does not exist (yet)", "data_missing",
                        "qcompile run needs it; validate and emit do not")]
    except (OSError, ValueError) as exc:
        return [error(where, f"cannot look at the data file: {getattr(exc, 'strerror', None) or exc}",
                      "data_unusable", hint)]
    if stat.S_ISDIR(info.st_mode):
        if not any((path / marker).is_file() for marker in SAVED_MARKERS):
            return [error(where, f"{path} is a directory that datasets' save_to_disk did not write", "data_not_file",
                          "name the data file inside it, or a folder written by Dataset.save_to_disk")]
        return []
    if not stat.S_ISREG(info.st_mode):
        return [error(where, f"{path} is not a regular file (a device or pipe never ends)", "data_not_file", hint)]
    if path.suffix.lower() not in SUFFIXES:
        return [error(where, f"{path}: unknown data file type {path.suffix or '(no suffix)'!r}", "data_file_type",
                      "use .jsonl (one JSON object per line), .json, .parquet or .csv")]
    if info.st_size == 0:
        return [error(where, f"{path} is empty", "data_empty", "write one JSON object per line")]
    if path.suffix.lower() not in TEXT_SUFFIXES:
        return []
    try:
        with open(path, "rb") as fh:
            bad = _first_bad_line(fh)
    except OSError as exc:
        return [error(where, f"cannot read {path}: {exc.strerror or exc}", "data_unreadable", hint)]
    if bad is not None:
        return [error(where, f"{path}:{bad}: not UTF-8 text", "data_not_utf8",
                      "save the file as UTF-8 (JSON lines are UTF-8)")]
    return []


def row_diagnostics(spec, spec_dir: Path) -> list[Diagnostic]:
    """Every bad row of the local JSON / JSON lines data (the first ROW_CAP, then a count), located in the
    data file itself: `data.jsonl:LINE:COL: error: ...`. Parquet, CSV and hub data are checked by the job."""
    data, out = spec.data, []
    columns = data.columns.mapping() if data.columns is not None else {}
    for name, where in ((data.path, WHERE), (data.eval_path, ("data", "eval_path"))):
        if name is None:
            continue
        try:
            path = resolve(name, Path(spec_dir))
        except (PathUnusable, OSError, ValueError):
            continue
        if path.suffix.lower() not in (".jsonl", ".json") or not path.is_file():
            continue
        try:
            problems, bad = scan_file(str(path), data.format, columns, ROW_CAP)
        except (OSError, UnicodeDecodeError):
            continue  # the file-level check says why
        for line, column, problem in problems:
            found = error((), problem.message, "data_row", problem.hint)
            out.append(found.at(str(path), line or None, column or None))
        if bad > len(problems):
            out.append(error(where, f"{path}: {bad - len(problems)} more bad rows not shown ({bad} in all)",
                             "data_row", "fix the rows above, then validate again"))
    return out
