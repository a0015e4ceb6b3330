"""write: put a build directory on disk atomically, never clobbering what qcompile did not write."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from qcompile.errors import OutputError

MANIFEST = "manifest.json"
GENERATOR = "qcompile"
EXECUTABLE = ("launch.sh", "train.py")



def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _previous_files(build_dir: Path) -> list[str] | None:
    """Files an earlier qcompile run listed, or None if the directory is not ours."""
    try:
        manifest = json.loads((build_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("generator") != GENERATOR:
        return None
    files = manifest.get("files", {})
    return [name for name in files if isinstance(name, str) and "/" not in name]


def write_build_dir(build_dir: Path, files: dict[str, bytes], manifest: bytes, force: bool) -> None:
    """Write `files` then the manifest (last, so an interrupted write leaves the old manifest valid)."""
    if build_dir.exists() and not build_dir.is_dir():
        raise OutputError(f"{build_dir} exists and is not a directory", "choose another -o DIR")
    previous = _previous_files(build_dir) if build_dir.exists() else []
    if previous is None and any(build_dir.iterdir()) and not force:
        raise OutputError(f"{build_dir} is not empty and was not written by qcompile; refusing to overwrite it",
                          "choose another -o DIR, or pass --force to write into it anyway")
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        for name, data in sorted(files.items()):
            atomic_write(build_dir / name, data, 0o755 if name in EXECUTABLE else 0o644)
        for stale in set(previous or ()) - set(files) - {MANIFEST}:
            (build_dir / stale).unlink(missing_ok=True)
        atomic_write(build_dir / MANIFEST, manifest)
    except OSError as exc:
        raise OutputError(f"cannot write {build_dir}: {exc.strerror or exc}") from None
