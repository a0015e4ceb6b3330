"""`qcompile run SPEC`: compile (the same artifacts as --emit), then launch the job and stream it.

Before anything is written, compiler/run_guard checks where the run writes (output_dir and offload
folder must be missing, empty or a qcompile run), that no other run holds it, and on --resume that
the spec still matches the run being resumed."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from qcompile.compiler.data_checks import data_diagnostics
from qcompile.compiler.emit import emit_loaded
from qcompile.compiler.launch import job_env, launch_script_argv, resolve_argv, run_job
from qcompile.compiler.load import load_spec
from qcompile.compiler.run_guard import begin_run, check_run

from .errors import EXIT_USER, handle_errors, print_diagnostics


@click.command(name="run")
@click.argument("spec", type=click.Path())
@click.option("--resume", is_flag=True, help="Continue from the latest complete checkpoint in training.output_dir.")
@click.option("--dry-run", is_flag=True, help="Check, write the build, print the launch command and environment, stop.")
@click.option("-o", "--output", "out_dir", type=click.Path(), help="Build directory [default: build/<spec name>].")
@click.option("--force", is_flag=True, help="Write into a directory qcompile did not create, or over files you "
              "changed (each kept as NAME.orig).")
@click.option("--no-memory-check", is_flag=True, help="Run even if the plan does not fit the budget.")
@handle_errors
def run(spec: str, resume: bool, dry_run: bool, out_dir: str | None, force: bool, no_memory_check: bool) -> None:
    """Compile SPEC and train: leaves a LoRA adapter in training.output_dir."""
    loaded = load_spec(spec, memory_check=not no_memory_check)
    missing = [d for d in data_diagnostics(loaded.spec, loaded.spec_dir, must_exist=True) if d.is_error]
    if missing:
        raise loaded.error(missing)
    start = check_run(loaded, resume)  # everything that can refuse the run, before a file is written
    result = emit_loaded(loaded, out_dir, force=force)
    print_diagnostics(loaded.warnings)
    build = result.build
    argv = resolve_argv(build.argv, resume)
    env = job_env(build.env)
    shown_env = {k: env[k] for k in sorted({*build.env, "TORCH_EXTENSIONS_DIR"})}
    click.echo(f"build: {result.build_dir}/ (backend {build.backend})", err=True)
    click.echo("env: " + " ".join(f"{k}={shlex.quote(v)}" for k, v in shown_env.items()), err=True)
    for change in start.applied:
        click.echo(f"resume: {change} (applied)", err=True)
    click.echo(f"launch: {shlex.join(argv)}", err=True)
    if dry_run:
        return
    begin_run(start)
    try:
        outcome = run_job(Path(result.build_dir), launch_script_argv(resume), env, echo=lambda line: click.echo(line))
    finally:
        start.release()
    if outcome.returncode != 0:
        who = f"rank {outcome.failed_rank}" if outcome.failed_rank is not None else "the job"
        click.echo(click.style(f"error: training failed (exit code {outcome.returncode}); last lines of {who}:",
                               fg="red"), err=True)
        for line in outcome.tail:
            click.echo(f"  | {line}", err=True)
        if outcome.cause:
            click.echo(f"  likely cause: {outcome.cause}", err=True)
        sys.exit(EXIT_USER)
