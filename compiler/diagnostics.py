"""Compiler-style diagnostics: `spec.yaml:12:5: error: lora.r: must be greater than 0`, then a hint."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Literal

from qcompile.errors import QcompileError

Severity = Literal["error", "warning"]
KeyPath = tuple[str | int, ...]
# One spelling for every diagnostic code, pydantic's own included: snake_case. Codes are also the
# titles of GitHub annotations and SARIF rule ids, so they must stay stable.
CODE = re.compile(r"^[a-z][a-z0-9_]*$")


def format_path(path: KeyPath) -> str:
    """lora.layers[3] style; the root is `<spec>`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<spec>"


@dataclass(frozen=True)
class Diagnostic:
    severity: Severity
    path: KeyPath
    message: str
    code: str
    hint: str | None = None
    file: str | None = None
    line: int | None = None  # 1-based
    col: int | None = None  # 1-based
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not CODE.match(self.code):
            raise ValueError(f"diagnostic code {self.code!r} is not snake_case")

    def at(self, file: str | None, line: int | None, col: int | None) -> Diagnostic:
        return replace(self, file=file, line=line, col=col)

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def sort_key(self) -> tuple:
        return (self.file or "", self.line or 0, self.col or 0, self.severity != "error", self.message)

    def text(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line, self.col) if p is not None)
        head = f"{where}: " if where else ""
        subject = f"{format_path(self.path)}: " if self.path else ""
        lines = [f"{head}{self.severity}: {subject}{self.message} [{self.code}]"]
        lines += [f"  {note}" for note in self.notes]
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "severity": self.severity,
            "path": format_path(self.path),
            "message": self.message,
            "code": self.code,
            "hint": self.hint,
            "notes": list(self.notes),
        }


def error(path: KeyPath, message: str, code: str, hint: str | None = None) -> Diagnostic:
    return Diagnostic("error", tuple(path), message, code, hint)


def warning(path: KeyPath, message: str, code: str, hint: str | None = None) -> Diagnostic:
    return Diagnostic("warning", tuple(path), message, code, hint)


class SpecError(QcompileError):
    """A spec the user must fix: carries every diagnostic found."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = sorted(diagnostics, key=Diagnostic.sort_key)
        super().__init__("\n".join(d.text() for d in self.diagnostics))
