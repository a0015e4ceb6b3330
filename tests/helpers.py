"""Small helpers several test folders share."""

from pathlib import Path

from qcompile.backends import get_backend
from qcompile.compiler.context import CompileContext


def narrowed(spec, spec_dir: Path, kind: str | None = None) -> CompileContext:
    """The compile context for `spec` in `spec_dir`, narrowed to `kind` (default: the spec's backend)."""
    return CompileContext.build(spec, Path(spec_dir)).for_backend(get_backend(kind or spec.backend.kind))
