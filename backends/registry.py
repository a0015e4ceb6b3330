"""Backend kind -> backend object: the built-ins, then plugins from the entry-point group
`qcompile.backends` (each entry point loads a backend object). A plugin that cannot be used is
reported once as a warning naming its package; the built-ins keep working."""

from __future__ import annotations

import os
import sys
import warnings
from functools import cache

from qcompile.errors import PluginError

from .base import REQUIRED, Backend
from .naive_mp import NAIVE_MODEL_PARALLEL
from .offload import OFFLOAD
from .zero2 import ZERO2
from .zero3 import ZERO3


class PluginWarning(UserWarning):
    """A backend plugin was ignored; the message names it and its package."""


ENTRY_POINT_GROUP = "qcompile.backends"
BUILTINS: dict[str, Backend] = {b.kind: b for b in (ZERO2, ZERO3, OFFLOAD, NAIVE_MODEL_PARALLEL)}
RESERVED = ("auto",)  # spec words that are not backends


def _plugin(entry) -> Backend:
    where = f"backend plugin {entry.name!r} ({entry.value}"
    where += f", package {entry.dist.name})" if entry.dist is not None else ")"
    try:
        backend = entry.load()
    except Exception as exc:  # noqa: BLE001 - any import failure of third-party code is the plugin's
        raise PluginError(f"{where} failed to import: {type(exc).__name__}: {exc}") from None
    missing = [name for name in REQUIRED if not hasattr(backend, name)]
    if missing:
        raise PluginError(f"{where} is not a backend: it lacks {', '.join(missing)}")
    if not isinstance(backend.kind, str) or not backend.kind:
        raise PluginError(f"{where} has no kind string")
    if backend.kind in BUILTINS or backend.kind in RESERVED:
        raise PluginError(f"{where} uses the kind {backend.kind!r}, which qcompile already has")
    return backend


def _searches_sys_path(finder) -> bool:
    """The stdlib's PathFinder, or the importlib_metadata backport's finder, which replaces it once
    imported (deepspeed's imports do): both find distributions in sys.path's folders, as read below."""
    from importlib.machinery import PathFinder

    kind = type(finder)
    return finder is PathFinder or (kind.__module__ == "importlib_metadata" and kind.__name__ == "MetadataPathFinder")


def _may_have_plugins() -> bool:
    """False only when no installed distribution can declare the group, found in ~3 ms by reading the
    entry_points.txt files the way importlib.metadata finds them (importing it and scanning cost ~45 ms
    of a cold `qcompile validate`). Anything this quick look cannot rule out (another distribution
    finder, a zip or egg on sys.path) answers True, and importlib.metadata decides."""
    if any(hasattr(f, "find_distributions") and not _searches_sys_path(f) for f in sys.meta_path):
        return True
    needle = ENTRY_POINT_GROUP.encode()
    for entry in sys.path:
        if entry.endswith(".egg") or (entry and not os.path.isdir(entry) and os.path.exists(entry)):
            return True
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if not name.lower().endswith((".dist-info", ".egg-info")):
                continue
            try:
                with open(os.path.join(entry, name, "entry_points.txt"), "rb") as fh:
                    if needle in fh.read():
                        return True
            except OSError:
                continue
    return False


def _load_plugins() -> dict[str, Backend]:
    if not _may_have_plugins():
        return {}
    from importlib.metadata import entry_points

    plugins: dict[str, Backend] = {}
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            backend = _plugin(entry)
            if backend.kind in plugins:
                raise PluginError(f"backend plugin {entry.name!r} uses the kind {backend.kind!r} of another plugin")
        except PluginError as exc:
            warnings.warn(f"{exc.message}; ignoring it", PluginWarning, stacklevel=2)
            continue
        plugins[backend.kind] = backend
    return plugins


@cache
def all_backends() -> dict[str, Backend]:
    """Built-ins, then plugins, loaded on first use (a plugin may itself import qcompile.backends)."""
    return {**BUILTINS, **_load_plugins()}


def get_backend(kind: str) -> Backend:
    """The backend for a concrete kind (`auto` is resolved by the compile context before this).
    Built-ins answer without loading plugins, so a plugin can wrap one while it is being loaded."""
    if kind in BUILTINS:
        return BUILTINS[kind]
    try:
        return all_backends()[kind]
    except KeyError:
        raise KeyError(f"no backend {kind!r}; known: {', '.join(sorted(all_backends()))}") from None


def by_speed() -> list[Backend]:
    """Every backend, fastest first: the order `auto` tries them and `plan --backend all` shows them."""
    return sorted(all_backends().values(), key=lambda b: (b.speed_rank, b.kind))
