"""The `qcompile` command: registers one module per subcommand; `qcompile SPEC` means `compile`.

The click group is built in cli/group.py. A plain `qcompile validate ...` runs without importing click
(cli/validate_core.py): it is the command run cold, once per commit or editor save."""

from __future__ import annotations

import sys
import warnings

EXIT_USER = 1  # as cli/errors.py: usage errors are the user's mistakes too

# name -> (module, attribute); modules are imported only when their command runs.
COMMANDS = {
    "compile": ("qcompile.cli.compile", "compile_command"),
    "validate": ("qcompile.cli.validate", "validate"),
    "plan": ("qcompile.cli.plan", "plan"),
    "run": ("qcompile.cli.run", "run"),
    "schema": ("qcompile.cli.schema", "schema"),
    "export": ("qcompile.cli.export", "export"),
}


def __getattr__(name: str):
    """`cli` (the click group) and its class, built on first use."""
    if name in ("cli", "QcompileGroup"):
        from . import group

        return getattr(group, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """qcompile's own warnings (an ignored backend plugin) as one line; others as Python shows them."""
    if category.__module__.startswith("qcompile."):
        from .errors import echo

        echo(f"warning: {message}", err=True, fg="yellow")
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def main() -> None:
    warnings.showwarning = _show_warning
    if sys.argv[1:2] == ["validate"]:
        from .validate_core import main_plain

        if main_plain(sys.argv[2:]):
            return
    from .group import cli

    cli(prog_name="qcompile")
