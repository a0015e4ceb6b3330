"""One base class for every problem the user can fix: a message, a hint and the exit code the CLI uses.

The CLI's edge (cli/errors.py) prints a QcompileError as one line and a hint, never a traceback;
anything that is not a QcompileError is qcompile's own failure."""

from __future__ import annotations

EXIT_OK, EXIT_USER, EXIT_INTERNAL = 0, 1, 2


class QcompileError(Exception):
    """A mistake in the user's input or environment, reported without a traceback."""

    exit_code = EXIT_USER

    def __init__(self, message: str, hint: str | None = None, notes: tuple[str, ...] = ()):
        self.message = message
        self.hint = hint
        self.notes = tuple(notes)  # extra lines shown under the message (a diff, the choices)
        super().__init__(message if hint is None else f"{message} (hint: {hint})")


class UserError(QcompileError):
    """A command-line argument or environment the user must change."""


class OutputError(QcompileError):
    """A build or output directory that cannot be written as asked."""


class PluginError(QcompileError):
    """A backend plugin that cannot be used; reported as a warning, the built-ins keep working."""
