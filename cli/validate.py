"""`qcompile validate PATH...`: every problem in every spec at once; exit 1 if any spec is bad or none is found.

A folder stands for the spec files under it (--include / --exclude globs). An unreadable or missing file is
that file's error, and the others are still checked, in every --format. The body is validate_core.run, which
a plain command line reaches without click (cli/main.py)."""

from __future__ import annotations

import click

from .errors import handle_errors
from .validate_core import FORMATS, run


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
    run(paths, fmt, include, exclude, no_memory_check, no_data_check)
