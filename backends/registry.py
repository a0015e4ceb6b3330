"""Backend kind -> backend object: a plain registry, no plugins."""

from __future__ import annotations

from .base import Backend
from .naive_mp import NaiveModelParallel
from .offload import Offload
from .zero2 import ZERO2
from .zero3 import ZERO3

BACKENDS: dict[str, Backend] = {b.kind: b for b in (ZERO2, ZERO3, Offload(), NaiveModelParallel())}


def get_backend(kind: str) -> Backend:
    """The backend for a concrete kind (`auto` is resolved by the planner before this)."""
    try:
        return BACKENDS[kind]
    except KeyError:
        raise KeyError(f"no backend {kind!r}; known: {', '.join(sorted(BACKENDS))}") from None
