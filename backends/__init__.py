"""Backends: one object per training engine (see base.py for the contract, registry.py for plugins)."""

from .base import Accepts, Backend
from .registry import BACKENDS, BUILTINS, by_speed, get_backend

__all__ = ["BACKENDS", "BUILTINS", "Accepts", "Backend", "by_speed", "get_backend"]
