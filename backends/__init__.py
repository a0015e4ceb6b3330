"""Backends: one object per training engine (see base.py for the contract, registry.py for plugins)."""

from .base import Accepts, Backend
from .registry import BUILTINS, all_backends, by_speed, get_backend

__all__ = ["BUILTINS", "Accepts", "Backend", "all_backends", "by_speed", "get_backend"]
