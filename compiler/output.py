"""write: put a build directory on disk atomically, never clobbering what qcompile did not write or what
the user changed since (manifest.json holds the hash of every file qcompile wrote)."""

from __future__ import annotations

import hashlib
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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _previous_hashes(build_dir: Path) -> dict[str, str] | None:
    """File -> sha256 as an earlier qcompile emit recorded them, or None if the directory is not ours."""
    try:
        manifest = json.loads((build_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("generator") != GENERATOR:
        return None
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        return None
    return {name: digest for name, digest in files.items() if isinstance(name, str) and "/" not in name}


def _changed_by_user(build_dir: Path, files: dict[str, bytes], previous: dict[str, str]) -> list[str]:
    """Files this emit would replace or remove whose bytes are neither what qcompile last wrote nor what
    it is about to write: the user's edits (or files the user put there)."""
    changed = []
    for name in sorted(set(files) | set(previous)):
        path = build_dir / name
        if not path.is_file():
            continue
        current = path.read_bytes()
        if sha256(current) != previous.get(name) and current != files.get(name):
            changed.append(name)
    return changed


def write_build_dir(build_dir: Path, files: dict[str, bytes], manifest: bytes, force: bool) -> None:
    """Write `files` then the manifest (last, so an interrupted write leaves the old manifest valid).
    A file the user changed since the last emit is never lost: without `force` nothing is written; with
    it, each such file is kept beside the new one as NAME.orig."""
    if build_dir.exists() and not build_dir.is_dir():
        raise OutputError(f"{build_dir} exists and is not a directory", "choose another -o DIR")
    previous = _previous_hashes(build_dir) if build_dir.exists() else {}
    if previous is None and any(build_dir.iterdir()) and not force:
        raise OutputError(f"{build_dir} is not empty and was not written by qcompile; refusing to overwrite it",
                          "choose another -o DIR, or pass --force to write into it anyway")
    try:
        changed = _changed_by_user(build_dir, files, previous or {}) if build_dir.exists() else []
        if changed and not force:
            names = ", ".join(str(build_dir / name) for name in changed)
            raise OutputError(f"{names} changed since qcompile wrote {'it' if len(changed) == 1 else 'them'}; "
                              "refusing to overwrite your edits",
                              "keep your changes elsewhere, or pass --force to overwrite "
                              "(each changed file is kept as NAME.orig)")
        build_dir.mkdir(parents=True, exist_ok=True)
        for name in changed:
            atomic_write(build_dir / f"{name}.orig", (build_dir / name).read_bytes())
        for name, data in sorted(files.items()):
            atomic_write(build_dir / name, data, 0o755 if name in EXECUTABLE else 0o644)
        for stale in set(previous or ()) - set(files) - {MANIFEST}:
            (build_dir / stale).unlink(missing_ok=True)
        atomic_write(build_dir / MANIFEST, manifest)
    except OSError as exc:
        raise OutputError(f"cannot write {build_dir}: {exc.strerror or exc}") from None
