"""The data file, checked before any process starts: a missing file is a warning for validate and
--emit (the data may come later) and an error for run; a directory, a device, an unreadable, empty
or non-UTF-8 file is always an error (the job would only find out after launch, on every rank)."""

from __future__ import annotations

import codecs
import os
import stat
from pathlib import Path

from .diagnostics import Diagnostic, error, warning
from .output_rules import PathUnusable, resolve

CHUNK = 1 << 20
WHERE = ("data", "path")


def data_file(spec, spec_dir: Path) -> Path:
    return resolve(spec.data.path, Path(spec_dir))


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
    hint = "data.path is a JSON lines file; relative paths are read from the spec's folder"
    try:
        path = data_file(spec, spec_dir)
        info = os.stat(path)
    except PathUnusable as exc:
        return [error(WHERE, str(exc), "data_unusable", hint)]
    except FileNotFoundError:
        shown = resolve(spec.data.path, Path(spec_dir))
        if must_exist:
            return [error(WHERE, f"{shown} does not exist", "data_missing", hint)]
        return [warning(WHERE, f"{shown} does not exist (yet)", "data_missing",
                        "qcompile run needs it; validate and emit do not")]
    except (OSError, ValueError) as exc:
        return [error(WHERE, f"cannot look at the data file: {getattr(exc, 'strerror', None) or exc}",
                      "data_unusable", hint)]
    if stat.S_ISDIR(info.st_mode):
        return [error(WHERE, f"{path} is a directory, not a data file", "data_not_file",
                      "name the .jsonl file inside it")]
    if not stat.S_ISREG(info.st_mode):
        return [error(WHERE, f"{path} is not a regular file (a device or pipe never ends)", "data_not_file", hint)]
    if info.st_size == 0:
        return [error(WHERE, f"{path} is empty", "data_empty", "write one JSON object per line")]
    try:
        with open(path, "rb") as fh:
            bad = _first_bad_line(fh)
    except OSError as exc:
        return [error(WHERE, f"cannot read {path}: {exc.strerror or exc}", "data_unreadable", hint)]
    if bad is not None:
        return [error(WHERE, f"{path}:{bad}: not UTF-8 text", "data_not_utf8",
                      "save the file as UTF-8 (JSON lines are UTF-8)")]
    return []
