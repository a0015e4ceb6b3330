"""`qcompile plan SPEC`: per device and per node, the predicted memory of a backend, or of all of them.

Exit 0 when the shown plan fits (with --backend all: when any backend fits and accepts the spec), 1
when it does not or the spec is bad; the plans are shown either way (under --json always as JSON).
--trace (needs the train extra) runs one real training step of the spec's own model shape under
FakeTensorMode and prints its traced peak next to the analytic figure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from qcompile.backends.registry import all_backends
from qcompile.compiler.checks import diagnose
from qcompile.compiler.choose import Considered, choose_backend, consider, suggest_fixes
from qcompile.compiler.load import load_spec
from qcompile.compiler.planner.picture import plan_svg
from qcompile.errors import EXIT_USER, UserError
from qcompile.schemas.units import format_bytes

from .errors import handle_errors

ALL = "all"
AUTO_ONLY = ("auto_nothing_accepts", "memory_budget")  # what auto reports when nothing is usable: shown below


def _trace_line(spec, arch) -> str:
    try:
        from qcompile.compiler.planner.trace import trace_spec  # the train extra: torch, peft

        traced, analytic = trace_spec(spec, arch)
    except ImportError as exc:
        raise UserError(f"--trace needs the train extra ({exc.name} is not installed)",
                        "pip install -e '.[train]'") from None
    error = (analytic.device - traced.device) / traced.device
    line = (f"trace (one step, single device, FakeTensorMode): traced {format_bytes(traced.device)}, "
            f"analytic {format_bytes(analytic.device)} ({error:+.1%})")
    if traced.host:  # activation offload: what went to host memory
        error = (analytic.host - traced.host) / traced.host
        line += (f"; offloaded to the host: traced {format_bytes(traced.host)}, analytic "
                 f"{format_bytes(analytic.host)} ({error:+.1%})")
    return line


def _write_pictures(path: Path, plans: list) -> None:
    """One SVG per plan shown: PATH itself for one plan, PATH-KIND.svg for several."""
    for one in plans:
        target = path if len(plans) == 1 else path.with_name(f"{path.stem}-{one.backend}{path.suffix or '.svg'}")
        try:
            target.write_text(plan_svg(one), encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write {target}: {exc.strerror or exc}", "choose another --svg FILE") from None


def _doc(c: Considered) -> dict:
    return {**c.plan.to_json(), "refused": list(c.refused)}


def _text(c: Considered) -> str:
    text = c.plan.to_text()
    return text + "".join(f"  refused: {why}\n" for why in c.refused)


@click.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--backend", "backend", default=None, metavar="all|KIND",
              help="Plan this backend, or every backend side by side (default: the spec's; auto picks).")
@click.option("--trace", is_flag=True, help="Also trace one real step of this model shape (needs torch).")
@click.option("--svg", "svg_path", type=click.Path(dir_okay=False), default=None,
              help="Also draw the plan as an SVG picture (with --backend all: FILE-KIND.svg per backend).")
@handle_errors
def plan(spec_path: str, as_json: bool, backend: str | None, trace: bool, svg_path: str | None) -> None:
    """Predict GPU and host memory of SPEC per backend and check its hardware budget."""
    loaded = load_spec(spec_path, memory_check=False, choose=False)
    ctx = loaded.context
    kind = backend or loaded.spec.backend.kind
    if kind not in (ALL, "auto", *all_backends()):
        raise UserError(f"unknown backend {kind!r}", f"use all, auto or one of {', '.join(all_backends())}")
    if ctx.arch is None:
        raise UserError(ctx.arch_problem.message, ctx.arch_problem.hint)
    problems = [d for d in diagnose(ctx, memory_check=False)[0] if d.is_error and d.code not in AUTO_ONLY]
    if problems:
        raise loaded.error(problems)

    chosen = None
    if kind in (ALL, "auto"):
        chosen, shown = choose_backend(ctx)
        if kind == "auto" and chosen is not None:
            shown = [c for c in shown if c.backend is chosen]
    else:
        shown = [c for c in consider(ctx) if c.backend.kind == kind]
    fits = any(c.usable for c in shown)
    first = next((c for c in shown if not c.refused), shown[0])
    fixes = [] if fits else suggest_fixes(ctx, first.backend)
    traced = _trace_line(loaded.spec, ctx.arch) if trace else None
    if svg_path:
        _write_pictures(Path(svg_path), [c.plan for c in shown])

    if as_json:
        if len(shown) == 1 and kind not in (ALL, "auto"):
            doc = _doc(shown[0])
        else:
            doc = {"chosen": chosen.kind if chosen else None, "fits": fits, "plans": [_doc(c) for c in shown]}
        doc["suggestions"] = [f.__dict__ for f in fixes]
        if traced:
            doc["trace"] = traced
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    else:
        a = ctx.arch
        click.echo(f"model: {loaded.spec.model.name} ({a.num_params():,} parameters, {a.num_layers} layers; "
                   f"{a.source})")
        if kind == "auto":
            click.echo(f"auto: {chosen.kind if chosen else 'no backend fits and accepts this spec'}")
        for c in shown:
            click.echo("")
            click.echo(_text(c), nl=False)
        if fixes:
            click.echo("\nwould fit:")
            for f in fixes:
                click.echo(f"  - {f.text()}")
        if traced:
            click.echo("\n" + traced)
    sys.exit(0 if fits else EXIT_USER)
