"""What `qcompile validate` does, without click: the command's body, and a reader for the plain forms of
its arguments so that a cold `qcompile validate spec.yaml` (pre-commit, CI, editors) skips importing click.

`plain_args` reads only what it is sure click reads the same way (long options, each value a separate word,
paths not starting with `-`) and only when both output streams are plain (see errors.plain_stream); for
anything else (help, a usage error, `--format=json`, a terminal's colours) it answers None and click runs
the command. tests/cli/test_validate_core.py checks both ways give the same output and exit code."""

from __future__ import annotations

import os
import sys

from .errors import EXIT_USER, echo, plain_stream, print_diagnostics, run_guarded

FORMATS = ("text", "json", "github", "sarif")
# The click command's options (cli/validate.py): option -> (parameter, takes a value, repeatable).
OPTIONS = {
    "--format": ("fmt", True, False),
    "--include": ("include", True, True),
    "--exclude": ("exclude", True, True),
    "--no-memory-check": ("no_memory_check", False, False),
    "--no-data-check": ("no_data_check", False, False),
}


def plain_args(argv: list[str]) -> dict | None:
    """validate's parameters from the words after `validate`, or None when click should read them."""
    if not (plain_stream(sys.stdout) and plain_stream(sys.stderr)):
        return None
    params: dict = {"paths": [], "fmt": "text", "include": [], "exclude": [], "no_memory_check": False,
                    "no_data_check": False}
    seen = set()
    words = iter(argv)
    for word in words:
        if not word.startswith("-"):
            params["paths"].append(word)
            continue
        if word not in OPTIONS:
            return None
        name, takes_value, repeatable = OPTIONS[word]
        if word in seen and not repeatable:
            return None
        seen.add(word)
        if not takes_value:
            params[name] = True
            continue
        value = next(words, None)
        if value is None or value.startswith("-") or (name == "fmt" and value not in FORMATS):
            return None
        if repeatable:
            params[name].append(value)
        else:
            params[name] = value
    if not params["paths"] or not all(map(_click_takes, params["paths"])):
        return None
    return {key: tuple(value) if isinstance(value, list) else value for key, value in params.items()}


def _click_takes(path: str) -> bool:
    """click.Path() (readable=True) refuses an existing path that os.access cannot read; let click say so."""
    if not path:
        return False
    try:
        os.stat(path)
    except (OSError, ValueError):
        return True  # missing (or unnameable): the file's own error, as through click
    return os.access(path, os.R_OK)


def run(paths: tuple[str, ...], fmt: str = "text", include: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
        no_memory_check: bool = False, no_data_check: bool = False) -> None:
    """Validate the specs; print the reports in `fmt`; exit 1 if any spec is bad or none is found."""
    # qcompile's models need no pydantic plugins; skipping their entry-point scan saves start-up time.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from qcompile.api import SPEC_GLOBS, check

    reports = check(paths, memory_check=not no_memory_check, include=include or SPEC_GLOBS, exclude=exclude,
                    data_check=not no_data_check)
    if fmt == "text":
        if no_data_check:
            echo("data rows not checked (--no-data-check); the job checks them when it starts")
        for report in reports:
            print_diagnostics(report.diagnostics, err=False)
            if report.valid:
                echo(f"{report.path}: ok")
        bad = sum(not r.valid for r in reports)
        echo(f"{len(reports) - bad} valid, {bad} invalid")
    else:
        from . import formats

        render = {"json": formats.to_json, "github": formats.to_github, "sarif": formats.to_sarif}[fmt]
        echo(render(reports), nl=fmt == "json")
    if not all(r.valid for r in reports):
        raise SystemExit(EXIT_USER)


def main_plain(argv: list[str]) -> bool:
    """Run `qcompile validate` without click when plain_args reads argv; False when click must."""
    params = plain_args(argv)
    if params is None:
        return False
    run_guarded(run, **params)
    return True
