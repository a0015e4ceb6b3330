"""One place maps failures to exit codes: 1 for the user's mistakes, 2 for qcompile's own failures."""

from __future__ import annotations

import functools
import sys

import click

from qcompile.compiler.diagnostics import SpecError
from qcompile.errors import EXIT_INTERNAL, EXIT_OK, EXIT_USER, QcompileError, UserError

__all__ = ["EXIT_INTERNAL", "EXIT_OK", "EXIT_USER", "UserError", "handle_errors", "print_diagnostics"]


def print_diagnostics(diagnostics, err: bool = True) -> None:
    for d in diagnostics:
        color = "red" if d.is_error else "yellow"
        head, _, rest = d.text().partition("\n")
        click.echo(click.style(head, fg=color) + ("\n" + rest if rest else ""), err=err)


def handle_errors(fn):
    """Wrap a command: user errors print cleanly and exit 1; anything else exits 2 (traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = bool(click.get_current_context().find_root().params.get("debug"))
        try:
            return fn(*args, **kwargs)
        except SpecError as exc:
            print_diagnostics(exc.diagnostics)
            n = sum(d.is_error for d in exc.diagnostics)
            click.echo(f"{n} error{'s' if n != 1 else ''}", err=True)
            sys.exit(exc.exit_code)
        except QcompileError as exc:
            click.echo(click.style(f"error: {exc.message}", fg="red"), err=True)
            for note in exc.notes:
                click.echo(f"  {note}", err=True)
            if exc.hint:
                click.echo(f"  hint: {exc.hint}", err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the edge of the program
            if debug:
                import traceback

                traceback.print_exc()
            else:
                click.echo(f"internal error: {type(exc).__name__}: {exc}", err=True)
                click.echo("  hint: run with --debug for the traceback, and report it", err=True)
            sys.exit(EXIT_INTERNAL)

    return wrapper
