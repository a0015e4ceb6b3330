"""Machine-readable forms of `qcompile validate`'s reports: JSON, GitHub workflow commands and SARIF 2.1.0.

Each takes the reports of `qcompile.api.check` and returns text; none prints or decides the exit code."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from qcompile import __version__
from qcompile.api import FileReport
from qcompile.compiler.diagnostics import Diagnostic, format_path

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def to_json(reports: list[FileReport]) -> str:
    return json.dumps([{"file": str(r.path), "valid": r.valid, "diagnostics": [d.as_dict() for d in r.diagnostics]}
                       for r in reports], indent=2, sort_keys=True)


# GitHub workflow commands: `::error file=F,line=L,col=C,title=T::message`. Property values escape
# % CR LF : and , (they delimit properties); the message escapes % CR LF. See the runner's
# ActionCommand.EscapeProperty / EscapeData.
def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _body(d: Diagnostic) -> str:
    """The message without its `file:line:col: severity:` head: `key.path: message [code]`, then notes and hint."""
    subject = f"{format_path(d.path)}: " if d.path else ""
    lines = [f"{subject}{d.message} [{d.code}]", *d.notes]
    if d.hint:
        lines.append(f"hint: {d.hint}")
    return "\n".join(lines)


def github_annotation(d: Diagnostic) -> str:
    level = "error" if d.is_error else "warning"
    props = [("file", d.file), ("line", d.line), ("col", d.col), ("title", d.code)]
    head = ",".join(f"{k}={_escape_property(str(v))}" for k, v in props if v is not None)
    return f"::{level} {head}::{_escape_data(_body(d))}"


def to_github(reports: list[FileReport]) -> str:
    return "".join(github_annotation(d) + "\n" for r in reports for d in r.diagnostics)


def _artifact(file: str) -> dict:
    """A relative path stays relative to the checkout (%SRCROOT%), as code scanning expects; an absolute
    one becomes a file: URI."""
    path = Path(file)
    if path.is_absolute():
        return {"uri": path.as_uri()}
    return {"uri": quote(PurePosixPath(*path.parts).as_posix()), "uriBaseId": "%SRCROOT%"}


def _result(d: Diagnostic, rule_index: int) -> dict:
    location: dict = {"artifactLocation": _artifact(d.file or ".")}
    if d.line is not None:
        location["region"] = {"startLine": d.line, **({"startColumn": d.col} if d.col is not None else {})}
    return {
        "ruleId": d.code,
        "ruleIndex": rule_index,
        "level": "error" if d.is_error else "warning",
        "message": {"text": _body(d)},
        "locations": [{"physicalLocation": location}],
    }


def to_sarif(reports: list[FileReport]) -> str:
    """One run of the `qcompile` tool; a rule per diagnostic code that occurs, results in report order."""
    diagnostics = [d for r in reports for d in r.diagnostics]
    codes = sorted({d.code for d in diagnostics})
    rules = [{"id": c, "name": c, "shortDescription": {"text": f"qcompile spec check: {c}"}} for c in codes]
    index = {c: i for i, c in enumerate(codes)}
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "qcompile", "version": __version__, "rules": rules}},
            "columnKind": "unicodeCodePoints",
            "results": [_result(d, index[d.code]) for d in diagnostics],
        }],
    }
    return json.dumps(log, indent=2, sort_keys=True) + "\n"
