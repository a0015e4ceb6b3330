"""The files a spec names, checked at validate time: the data file, where the run writes, and the
model's config.json (sizes no model can have are the user's mistake, not an internal error)."""

from __future__ import annotations

from pathlib import Path

from .data_checks import data_diagnostics
from .diagnostics import Diagnostic, error
from .output_rules import output_diagnostics


def config_diagnostics(spec, spec_dir: Path) -> list[Diagnostic]:
    from .planner.architecture import ArchitectureInvalid
    from .planner.resolve import resolve_architecture

    try:
        resolve_architecture(spec, Path(spec_dir))
    except ArchitectureInvalid as exc:
        where = ("model", "config") if spec.model.config else ("model", "name")
        return [error(where, exc.message, "config_invalid", exc.hint)]
    except Exception:  # noqa: BLE001 - unknown architectures are the planner's to report
        return []
    return []


def input_diagnostics(spec, spec_dir: Path) -> list[Diagnostic]:
    return data_diagnostics(spec, spec_dir) + output_diagnostics(spec, spec_dir) + config_diagnostics(spec, spec_dir)
