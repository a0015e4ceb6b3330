"""qcompile: a declarative compiler for memory-bounded LoRA fine-tuning.

The public API (see api.py) is loaded on first use, so `import qcompile` stays cheap (no pydantic, no yaml):

    qcompile.validate(paths) -> list[Diagnostic]     qcompile.check(paths) -> list[FileReport]
    qcompile.plan(spec, backend=None) -> list[Plan]  qcompile.SpecError, qcompile.Diagnostic
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "validate": "qcompile.api",
    "check": "qcompile.api",
    "plan": "qcompile.api",
    "find_specs": "qcompile.api",
    "FileReport": "qcompile.api",
    "Diagnostic": "qcompile.compiler.diagnostics",
    "SpecError": "qcompile.compiler.diagnostics",
}

__all__ = ["Diagnostic", "FileReport", "SpecError", "__version__", "check", "find_specs", "plan", "validate"]

if TYPE_CHECKING:
    from qcompile.api import FileReport, check, find_specs, plan, validate
    from qcompile.compiler.diagnostics import Diagnostic, SpecError


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'qcompile' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
