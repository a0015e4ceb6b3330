"""`qcompile run SPEC`: compile (the same artifacts as --emit), then launch the job and stream it.

Before anything is written, compiler/run_guard checks where the run writes (output_dir and offload
folder must be missing, empty or a qcompile run), that no other run holds it, and on --resume that
the spec still matches the run being resumed. On several nodes, `--node-rank K` starts node K's agent;
node 0 does those checks and holds the lock, the others only join."""

from __future__ import annotations

import os
import shlex
import socket
import sys
import time
from pathlib import Path

import click

from qcompile.compiler.data_checks import data_diagnostics
from qcompile.compiler.emit import emit_loaded
from qcompile.compiler.launch import (
    ProgressView,
    after_run,
    check_trackers,
    default_cache_dir,
    job_env,
    launch_script_argv,
    node_environment,
    resolve_argv,
    run_job,
)
from qcompile.compiler.load import load_spec
from qcompile.compiler.run_guard import begin_run, check_run

from .errors import EXIT_USER, handle_errors, print_diagnostics


def launch_values(env: dict[str, str]) -> dict[str, str]:
    """The launch-time values launch.sh derives, for the `launch:` line shown before the job starts."""
    if "NODE_RANK" not in env:
        return {}
    return {"QCOMPILE_NODE_RANK": env["NODE_RANK"], "QCOMPILE_RDZV_IS_HOST": str(int(env["NODE_RANK"] == "0")),
            "QCOMPILE_RDZV_ENDPOINT": f"{env.get('MASTER_ADDR', '')}:{env.get('MASTER_PORT', '')}",
            "MASTER_ADDR": env.get("MASTER_ADDR", ""), "MASTER_PORT": env.get("MASTER_PORT", "")}


@click.command(name="run")
@click.argument("spec", type=click.Path())
@click.option("--resume", is_flag=True, help="Continue from the latest complete checkpoint in training.output_dir.")
@click.option("--dry-run", is_flag=True, help="Check, write the build, print the launch command and environment, stop.")
@click.option("-o", "--output", "out_dir", type=click.Path(), help="Build directory [default: build/<spec name>].")
@click.option("--force", is_flag=True, help="Write into a directory qcompile did not create, or over files you "
              "changed (each kept as NAME.orig).")
@click.option("--no-memory-check", is_flag=True, help="Run even if the plan does not fit the budget.")
@click.option("--node-rank", type=click.IntRange(min=0), help="This machine's node, 0..hardware.nodes-1 "
              "[default: NODE_RANK or SLURM_NODEID]; run once on every node.")
@click.option("--master-addr", help="Host of node 0 [default: MASTER_ADDR, the first host of SLURM_JOB_NODELIST, "
              "then hardware.rendezvous.address].")
@click.option("--master-port", type=click.IntRange(1, 65535), help="Rendezvous port on node 0 "
              "[default: MASTER_PORT, then hardware.rendezvous.port].")
@click.option("--preflight", is_flag=True, help="Run the real job for a few steps in a temporary folder (checkpoint, "
              "resume, measured memory against the plan, time estimate), print a verdict, leave nothing behind.")
@click.option("--steps", type=click.IntRange(1, 1000),
              help="Steps the preflight trains before its checkpoint [default: 3].")
@handle_errors
def run(spec: str, resume: bool, dry_run: bool, out_dir: str | None, force: bool, no_memory_check: bool,
        node_rank: int | None, master_addr: str | None, master_port: int | None, preflight: bool,
        steps: int | None) -> None:
    """Compile SPEC and train: leaves a LoRA adapter in training.output_dir."""
    loaded = load_spec(spec, memory_check=not no_memory_check)
    missing = [d for d in data_diagnostics(loaded.spec, loaded.spec_dir, must_exist=True) if d.is_error]
    if missing:
        raise loaded.error(missing)
    if preflight:
        from qcompile.compiler.preflight import DEFAULT_STEPS
        from qcompile.compiler.preflight import preflight as run_preflight

        sys.exit(0 if run_preflight(loaded, steps or DEFAULT_STEPS, echo=click.echo) else EXIT_USER)
    check_trackers(loaded.context.spec)
    node = node_environment(loaded.context.spec, node_rank, master_addr, master_port)  # refuses before launch
    leader = node.get("NODE_RANK", "0") == "0"
    start = check_run(loaded, resume) if leader else None  # what can refuse the run, before a file is written
    result = emit_loaded(loaded, out_dir, force=force)
    print_diagnostics(loaded.warnings)
    build = result.build
    base = {**os.environ, **node}
    if node and "TORCH_EXTENSIONS_DIR" not in base:  # JIT-built ops stay per machine and node
        base["TORCH_EXTENSIONS_DIR"] = str(default_cache_dir() / "torch_extensions" /
                                           f"{socket.gethostname()}-node{node['NODE_RANK']}")
    env = job_env(build.env, base)
    argv = resolve_argv(build.argv, resume, values=launch_values(env))
    shown_env = {k: env[k] for k in sorted({*build.env, *node, "TORCH_EXTENSIONS_DIR"})}
    click.echo(f"build: {result.build_dir}/ (backend {build.backend})", err=True)
    click.echo("env: " + " ".join(f"{k}={shlex.quote(v)}" for k, v in shown_env.items()), err=True)
    for change in start.applied if start is not None else ():
        click.echo(f"resume: {change} (applied)", err=True)
    click.echo(f"launch: {shlex.join(argv)}", err=True)
    if dry_run:
        return
    if start is not None:
        begin_run(start)
    view, started = ProgressView(click.echo), time.time()
    try:
        # The launcher keeps the lock's descriptor: the lock lives as long as the job, even past a kill -9 here.
        outcome = run_job(Path(result.build_dir), launch_script_argv(resume), env, echo=view,
                          pass_fds=(start.lock_fd,) if start is not None and start.lock_fd is not None else ())
    finally:
        view.close()
        if start is not None:
            start.release()
            after_run(start.paths.output_dir, echo=click.echo, build_dir=Path(result.build_dir), started=started)
    if outcome.returncode != 0:
        who = f"rank {outcome.failed_rank}" if outcome.failed_rank is not None else "the job"
        click.echo(click.style(f"error: training failed (exit code {outcome.returncode}); last lines of {who}:",
                               fg="red"), err=True)
        for line in outcome.tail:
            click.echo(f"  | {line}", err=True)
        if outcome.cause:
            click.echo(f"  likely cause: {outcome.cause}", err=True)
        sys.exit(EXIT_USER)
