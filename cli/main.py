"""The `qcompile` command: registers one module per subcommand; `qcompile SPEC` means `compile`."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings

import click

from qcompile import __version__

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


class QcompileGroup(click.Group):
    """Lazy subcommands; a first argument that is no command is a spec for `compile`."""

    def list_commands(self, ctx):
        return [name for name in COMMANDS if name != "compile" and importlib.util.find_spec(COMMANDS[name][0])]

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def resolve_command(self, ctx, args):
        if args and args[0] not in COMMANDS and not args[0].startswith("-"):
            args = ["compile", *args]
        return super().resolve_command(ctx, args)

    def main(self, *args, **kwargs):
        """Exit codes: 0 success, 1 the user's mistake (a bad spec, a refused run, and command-line usage
        errors such as an unknown option, which click would exit with 2), 2 an internal failure."""
        if kwargs.get("standalone_mode", True) is False:
            return super().main(*args, **kwargs)
        try:
            return super().main(*args, **{**kwargs, "standalone_mode": False})
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(EXIT_USER)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(EXIT_USER)

    def format_usage(self, ctx, formatter):
        formatter.write_usage("qcompile", "SPEC [--emit] [-o DIR] | COMMAND [ARGS]...")


@click.group(cls=QcompileGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for internal errors.")
@click.version_option(__version__, prog_name="qcompile")
def cli(debug: bool) -> None:
    """qcompile: compile a LoRA fine-tuning spec into a job that fits its memory budget.

    \b
      qcompile validate specs/*.yaml     check specs (every error at once)
      qcompile plan spec.yaml            predict memory per device and node
      qcompile spec.yaml --emit          write build/<spec>/ artifacts
      qcompile run spec.yaml             compile and launch
      qcompile schema                    JSON Schema for editors
    """


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """qcompile's own warnings (an ignored backend plugin) as one line; others as Python shows them."""
    if category.__module__.startswith("qcompile."):
        click.echo(click.style(f"warning: {message}", fg="yellow"), err=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def main() -> None:
    warnings.showwarning = _show_warning
    cli(prog_name="qcompile")
