"""`qcompile validate PATH...`: every problem in every spec at once; exit 1 if any spec is bad or none is found.

A folder stands for the spec files under it (--include / --exclude globs). An unreadable or missing file is
that file's error, and the others are still checked, in every --format."""

from __future__ import annotations

import os

import click

from .errors import EXIT_USER, handle_errors, print_diagnostics

FORMATS = ("text", "json", "github", "sarif")


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(), metavar="PATH...")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
              help="text for people; json; github (workflow annotations); sarif (2.1.0, for code scanning).")
@click.option("--include", "include", multiple=True, metavar="GLOB",
              help="In folders, check files whose name or relative path matches (repeatable; default *.yaml, *.yml).")
@click.option("--exclude", "exclude", multiple=True, metavar="GLOB",
              help="In folders, skip files and folders whose name or relative path matches (repeatable).")
@click.option("--no-memory-check", is_flag=True, help="Skip the memory-budget check.")
@click.option("--no-data-check", is_flag=True,
              help="Skip reading the rows of local JSON / JSON lines data (for huge files); the job still checks them.")
@handle_errors
def validate(paths: tuple[str, ...], fmt: str, include: tuple[str, ...], exclude: tuple[str, ...],
             no_memory_check: bool, no_data_check: bool) -> None:
    """Validate spec files, or the folders that hold them."""
    # qcompile's models need no pydantic plugins; skipping their entry-point scan saves start-up time.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from qcompile.api import SPEC_GLOBS, check

    reports = check(paths, memory_check=not no_memory_check, include=include or SPEC_GLOBS, exclude=exclude,
                    data_check=not no_data_check)
    if fmt == "text":
        if no_data_check:
            click.echo("data rows not checked (--no-data-check); the job checks them when it starts")
        for report in reports:
            print_diagnostics(report.diagnostics, err=False)
            if report.valid:
                click.echo(f"{report.path}: ok")
        bad = sum(not r.valid for r in reports)
        click.echo(f"{len(reports) - bad} valid, {bad} invalid")
    else:
        from . import formats

        render = {"json": formats.to_json, "github": formats.to_github, "sarif": formats.to_sarif}[fmt]
        click.echo(render(reports), nl=fmt == "json")
    if not all(r.valid for r in reports):
        raise SystemExit(EXIT_USER)
