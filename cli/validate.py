"""`qcompile validate SPEC...`: every problem in every spec at once; exit 1 if any spec is bad."""

from __future__ import annotations

import json
from pathlib import Path

import click

from qcompile.compiler.diagnostics import Diagnostic, SpecError
from qcompile.compiler.load import load_spec

from .errors import EXIT_USER, handle_errors, print_diagnostics


def _spec_files(paths: tuple[str, ...]) -> list[Path]:
    """Files as given; a directory stands for the *.yaml / *.yml files in it."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
        else:
            out.append(p)
    return out


def check_file(path: Path, memory_check: bool) -> list[Diagnostic]:
    try:
        return load_spec(path, memory_check=memory_check).warnings
    except SpecError as exc:
        return exc.diagnostics


def _github(d: Diagnostic) -> str:
    """A GitHub Actions workflow annotation."""
    level = "error" if d.is_error else "warning"
    props = [f"file={d.file}"] + [f"{k}={v}" for k, v in (("line", d.line), ("col", d.col)) if v is not None]
    props.append(f"title={d.code}")
    message = d.text().partition(": " + d.severity + ": ")[2] or d.message
    message = message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return f"::{level} {','.join(props)}::{message}"


@click.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["text", "json", "github"]), default="text", show_default=True)
@click.option("--no-memory-check", is_flag=True, help="Skip the memory-budget check.")
@handle_errors
def validate(specs: tuple[str, ...], fmt: str, no_memory_check: bool) -> None:
    """Validate spec files (or folders of them)."""
    results = [(p, check_file(p, not no_memory_check)) for p in _spec_files(specs)]
    bad = [p for p, diags in results if any(d.is_error for d in diags)]
    if fmt == "json":
        click.echo(json.dumps([{"file": str(p), "valid": p not in bad, "diagnostics": [d.as_dict() for d in diags]}
                               for p, diags in results], indent=2, sort_keys=True))
    else:
        for path, diags in results:
            if fmt == "github":
                for d in diags:
                    click.echo(_github(d))
            else:
                print_diagnostics(diags, err=False)
                if not any(d.is_error for d in diags):
                    click.echo(f"{path}: ok")
        if fmt == "text":
            click.echo(f"{len(results) - len(bad)} valid, {len(bad)} invalid")
    if bad or not results:
        raise SystemExit(EXIT_USER)
