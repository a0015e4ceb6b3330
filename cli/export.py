"""`qcompile export SPEC [-o DIR]`: merge the run's final adapter into the base weights and write a model
folder that AutoModelForCausalLM.from_pretrained loads (safetensors shards, config, tokenizer).

compiler/export.py decides everything before a weight is read (adapter, base, output folder, host RAM
of each way of merging against hardware.host_memory); compiler/merge.py, imported only here and only
once the plan is accepted, does the merge. Files are written into a temporary folder beside DIR and
moved in at the end, so an interrupted export leaves DIR as it was.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import tempfile
from pathlib import Path

import click

from qcompile.compiler.export import MODES, check_disk, plan_export, write_marker
from qcompile.compiler.load import load_spec
from qcompile.errors import UserError
from qcompile.schemas.units import format_bytes

from .errors import handle_errors


def peak_rss() -> int:
    """This process's peak resident memory: VmHWM (Linux, starts afresh at exec), else getrusage's maximum
    (which on Linux carries over the parent's peak across fork and exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _merge(plan, staging: Path) -> None:
    try:
        from qcompile.compiler import merge
    except ImportError as exc:
        missing = exc.name or str(exc).split(" ")[0]  # a module that fails to import may not name itself
        raise UserError(f"export needs the train extra ({missing} is not installed)",
                        "pip install -e '.[train]'") from None
    echo = lambda line: click.echo(f"  {line}", err=True)  # noqa: E731
    try:
        if plan.mode == "shards":
            merge.merge_by_shard(plan.base, plan.adapter, staging, plan.dtype, progress=echo)
        else:
            merge.merge_in_memory(plan.base, plan.adapter, staging, plan.dtype, progress=echo)
    except KeyError as exc:
        raise UserError(f"{plan.adapter}: {exc.args[0]}", "the adapter was trained on another model; check "
                        "model.name") from None
    if not merge.save_tokenizer(plan.base, staging):
        click.echo(click.style(f"warning: {plan.base} has no tokenizer; none written", fg="yellow"), err=True)


def _move_in(plan, staging: Path) -> list[str]:
    """Replace the earlier export's files (only those) with the new ones, marker last."""
    out = plan.out_dir
    out.mkdir(parents=True, exist_ok=True)
    for name in plan.previous:
        (out / name).unlink(missing_ok=True)
    names = sorted(p.name for p in staging.iterdir())
    for name in names:
        os.chmod(staging / name, 0o644)  # the staging folder is private (0700); its files need not be
        os.replace(staging / name, out / name)
    write_marker(out, names)
    return names


@click.command(name="export")
@click.argument("spec", type=click.Path())
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False),
              help="Folder for the merged model [default: training.output_dir/merged].")
@click.option("--mode", type=click.Choice(MODES), default="auto", show_default=True,
              help="memory: peft's merge_and_unload on the whole model; shards: one safetensors shard at a time "
              "(host RAM bounded by the largest shard); auto: memory when hardware.host_memory allows it.")
@click.option("--force", is_flag=True, help="Write into DIR even if it holds files the last export did not write.")
@click.option("--dry-run", is_flag=True, help="Check and print the plan (host RAM of each mode), write nothing.")
@handle_errors
def export(spec: str, out_dir: str | None, mode: str, force: bool, dry_run: bool) -> None:
    """Merge the adapter of SPEC's run into its base model; writes a model folder transformers loads."""
    loaded = load_spec(spec, memory_check=False, choose=False)
    plan = plan_export(loaded.spec, Path(spec), loaded.spec_dir, loaded.context.arch, out_dir, force)
    plan.choose(mode)
    click.echo(plan.text(), err=True)
    check_disk(plan)
    if dry_run:
        return
    parent = plan.out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{plan.out_dir.name}.export-"))
    try:
        _merge(plan, staging)
        names = _move_in(plan, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = sum((plan.out_dir / n).stat().st_size for n in names)
    peak = peak_rss()
    planned = plan.in_memory_bytes if plan.mode == "memory" else plan.by_shard_bytes
    click.echo(f"peak host RAM: {format_bytes(peak)} (planned {format_bytes(planned)}, "
               f"{peak / planned:.0%} of it)", err=True)
    click.echo(f"merged model written to {plan.out_dir} ({len(names)} files, {format_bytes(size)}); "
               "load it with AutoModelForCausalLM.from_pretrained")
