"""`qcompile SPEC [--emit] [-o DIR]`: validate, plan, and write the build directory."""

from __future__ import annotations

import click

from qcompile.compiler.emit import compile_spec, emit
from qcompile.compiler.load import load_spec

from .errors import handle_errors, print_diagnostics


@click.command(name="compile")
@click.argument("spec", type=click.Path())
@click.option("--emit", "do_emit", is_flag=True, help="Write the artifacts (otherwise only check and list them).")
@click.option("-o", "--output", "out_dir", type=click.Path(), help="Build directory [default: build/<spec name>].")
@click.option("--force", is_flag=True, help="Write into a directory qcompile did not create, or over files you "
              "changed (each kept as NAME.orig).")
@click.option("--no-memory-check", is_flag=True, help="Emit even if the plan does not fit the budget.")
@handle_errors
def compile_command(spec: str, do_emit: bool, out_dir: str | None, force: bool, no_memory_check: bool) -> None:
    """Compile SPEC into a DeepSpeed config, an accelerate config, a training script and a launch command."""
    if not do_emit:
        loaded = load_spec(spec, memory_check=not no_memory_check)
        print_diagnostics(loaded.warnings)
        build = compile_spec(loaded)
        click.echo(f"{spec}: ok (backend {build.backend}); would write: {', '.join(sorted(build.files))}")
        click.echo("pass --emit to write them")
        return
    result = emit(spec, out_dir, force=force, memory_check=not no_memory_check)
    print_diagnostics(result.loaded.warnings)
    click.echo(f"wrote {result.build_dir}/ (backend {result.build.backend}):")
    for name in sorted(result.build.files) + ["manifest.json"]:
        click.echo(f"  {name}")
    click.echo(f"launch: {result.build_dir}/launch.sh")
