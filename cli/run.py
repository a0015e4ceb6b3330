"""`qcompile run SPEC`: compile (the same artifacts as --emit), then launch the job and stream it."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from qcompile.compiler.emit import emit
from qcompile.compiler.launch import job_env, launch_script_argv, resolve_argv, run_job

from .errors import EXIT_USER, handle_errors, print_diagnostics


@click.command(name="run")
@click.argument("spec", type=click.Path())
@click.option("--resume", is_flag=True, help="Continue from the latest complete checkpoint in training.output_dir.")
@click.option("--dry-run", is_flag=True, help="Write the build, print the launch command and environment, stop.")
@click.option("-o", "--output", "out_dir", type=click.Path(), help="Build directory [default: build/<spec name>].")
@click.option("--force", is_flag=True, help="Write into a directory qcompile did not create, or over files you "
              "changed (each kept as NAME.orig).")
@click.option("--no-memory-check", is_flag=True, help="Run even if the plan does not fit the budget.")
@handle_errors
def run(spec: str, resume: bool, dry_run: bool, out_dir: str | None, force: bool, no_memory_check: bool) -> None:
    """Compile SPEC and train: leaves a LoRA adapter in training.output_dir."""
    result = emit(spec, out_dir, force=force, memory_check=not no_memory_check)
    print_diagnostics(result.loaded.warnings)
    build = result.build
    argv = resolve_argv(build.argv, resume)
    env = job_env(build.env)
    shown_env = {k: env[k] for k in sorted({*build.env, "TORCH_EXTENSIONS_DIR"})}
    click.echo(f"build: {result.build_dir}/ (backend {build.backend})", err=True)
    click.echo("env: " + " ".join(f"{k}={shlex.quote(v)}" for k, v in shown_env.items()), err=True)
    click.echo(f"launch: {shlex.join(argv)}", err=True)
    if dry_run:
        return
    outcome = run_job(Path(result.build_dir), launch_script_argv(resume), env, echo=lambda line: click.echo(line))
    if outcome.returncode != 0:
        who = f"rank {outcome.failed_rank}" if outcome.failed_rank is not None else "the job"
        click.echo(click.style(f"error: training failed (exit code {outcome.returncode}); last lines of {who}:",
                               fg="red"), err=True)
        for line in outcome.tail:
            click.echo(f"  | {line}", err=True)
        sys.exit(EXIT_USER)
