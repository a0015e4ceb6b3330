"""One place maps failures to exit codes: 1 for the user's mistakes, 2 for qcompile's own failures.

Nothing here imports click at module level: `qcompile validate` runs without it (cli/validate_core.py)."""

from __future__ import annotations

import codecs
import functools
import sys

from qcompile.compiler.diagnostics import SpecError
from qcompile.errors import EXIT_INTERNAL, EXIT_OK, EXIT_USER, QcompileError, UserError

__all__ = ["EXIT_INTERNAL", "EXIT_OK", "EXIT_USER", "UserError", "echo", "handle_errors", "plain_stream",
           "print_diagnostics", "run_guarded"]

def plain_stream(stream) -> bool:
    """A stream click.echo writes to as given, ANSI codes removed: not a terminal, and UTF-8 (which click
    neither re-wraps nor colours). CI logs, pre-commit and pipes are such streams."""
    try:
        if stream is None or stream.isatty():
            return False
        return codecs.lookup(stream.encoding).name == "utf-8"
    except Exception:  # noqa: BLE001 - anything unusual goes to click itself
        return False


def echo(message: str = "", err: bool = False, fg: str | None = None, nl: bool = True) -> None:
    """click.echo(click.style(message, fg=fg)): done here for text without escape codes on a plain stream
    (click writes it as given there), so printing needs no click; click itself everywhere else (colours on
    a terminal, removing escape codes that a spec's own text may carry)."""
    stream = sys.stderr if err else sys.stdout
    if plain_stream(stream) and "\033" not in message:
        stream.write(message + ("\n" if nl else ""))
        stream.flush()
        return
    import click

    click.echo(click.style(message, fg=fg) if fg else message, err=err, nl=nl)


def print_diagnostics(diagnostics, err: bool = True) -> None:
    for d in diagnostics:
        color = "red" if d.is_error else "yellow"
        head, _, rest = d.text().partition("\n")
        echo(head, err=err, fg=color)
        if rest:
            echo(rest, err=err)


def handle_errors(fn):
    """Wrap a click command: user errors print cleanly and exit 1; anything else exits 2 (traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import click

        debug = bool(click.get_current_context().find_root().params.get("debug"))
        return run_guarded(fn, *args, debug=debug, **kwargs)

    return wrapper


def run_guarded(fn, *args, debug: bool = False, **kwargs):
    """Call fn; a SpecError or QcompileError prints cleanly and exits with its code, anything else exits 2."""
    try:
        return fn(*args, **kwargs)
    except SpecError as exc:
        print_diagnostics(exc.diagnostics)
        n = sum(d.is_error for d in exc.diagnostics)
        echo(f"{n} error{'s' if n != 1 else ''}", err=True)
        sys.exit(exc.exit_code)
    except QcompileError as exc:
        echo(f"error: {exc.message}", err=True, fg="red")
        for note in exc.notes:
            echo(f"  {note}", err=True)
        if exc.hint:
            echo(f"  hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - the edge of the program
        click = sys.modules.get("click")  # click's own exceptions exist only once click is imported
        if click is not None and isinstance(exc, (click.exceptions.Exit, click.ClickException, click.Abort)):
            raise
        if debug:
            import traceback

            traceback.print_exc()
        else:
            echo(f"internal error: {type(exc).__name__}: {exc}", err=True)
            echo("  hint: run with --debug for the traceback, and report it", err=True)
        sys.exit(EXIT_INTERNAL)
