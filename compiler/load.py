"""load -> validate: read a spec file and return a Spec, or raise SpecError with every problem found."""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from qcompile.schemas.spec import Spec

from .checks import diagnose
from .context import CompileContext
from .diagnostics import Diagnostic, SpecError, error
from .yaml_source import Positions, YamlError, read_yaml

MAX_SPEC_BYTES = 1_000_000


@dataclass(frozen=True)
class LoadedSpec:
    spec: Spec  # as written (its backend may be `auto`)
    path: Path
    spec_dir: Path
    source: bytes
    positions: Positions
    context: CompileContext  # narrowed to the backend that runs, when one was chosen
    warnings: list[Diagnostic] = field(default_factory=list)

    def error(self, diagnostics: list[Diagnostic]) -> SpecError:
        """A SpecError for problems found after loading, placed in this spec's file."""
        return SpecError(_place(diagnostics, str(self.path), self.positions))


def _read(path: Path) -> tuple[bytes, str]:
    def fail(message: str, hint: str | None = None) -> SpecError:
        return SpecError([error((), message, "spec_unreadable", hint).at(str(path), None, None)])

    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise fail("is a directory, not a spec file", "name a .yaml file inside it")
        if not stat.S_ISREG(mode):  # a FIFO would block the read; a device is no spec
            raise fail("not a regular file", "name a .yaml file")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise fail("no such file") from None
    except OSError as exc:
        raise fail(f"cannot read the file: {exc.strerror or exc}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise fail(f"larger than {MAX_SPEC_BYTES} bytes; a spec is a small YAML file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise SpecError([error((), "not UTF-8 text; is this a binary file?", "spec_not_text")
                         .at(str(path), line, 1)]) from None
    return raw, text


def _place(diags: list[Diagnostic], file: str, positions: Positions) -> list[Diagnostic]:
    out = []
    for d in diags:
        if d.line is None:
            line, col = positions.of_value(d.path)
            d = d.at(file, line, col)
        out.append(d.at(file, d.line, d.col))
    return out


def load_spec(path: str | Path, memory_check: bool = True, choose: bool = True) -> LoadedSpec:
    """Every stage's diagnostics at once: YAML, schema, cross-field rules, then architecture and budget.
    With choose=False only what the spec says is checked (no backend is chosen or narrowed to, no budget):
    `qcompile plan` reports the plans itself."""
    path = Path(path)
    file = str(path)
    raw, text = _read(path)
    try:
        data, positions = read_yaml(text)
    except YamlError as exc:
        raise SpecError([exc.diagnostic.at(file, exc.diagnostic.line, exc.diagnostic.col)]) from None
    if not isinstance(data, dict):
        what = "a list" if isinstance(data, list) else "a single value"
        raise SpecError([error((), f"the spec must be a mapping of sections, not {what}", "spec_not_mapping",
                               "start with `version: 1`, then model:, hardware:, ...").at(file, 1, 1)])
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        from .errors_map import to_diagnostics  # only a spec with schema errors needs it

        raise SpecError(_place(to_diagnostics(exc, data, positions, Spec), file, positions)) from None
    context = CompileContext.build(spec, path.resolve().parent)
    if not choose:
        return LoadedSpec(spec, path, context.spec_dir, raw, positions, context)
    found, narrowed = diagnose(context, memory_check)
    diags = _place(found, file, positions)
    if any(d.is_error for d in diags) or narrowed is None:
        raise SpecError(diags)
    return LoadedSpec(spec, path, context.spec_dir, raw, positions, narrowed, sorted(diags, key=Diagnostic.sort_key))
