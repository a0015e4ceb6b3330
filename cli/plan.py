"""`qcompile plan SPEC`: per device and per node, the predicted memory of a backend, or of all of them.

Exit 0 when the shown plan fits (with --backend all: when any backend fits), 1 when it does not or the
spec is bad. --trace (needs the train extra) runs one real training step of the spec's own model shape
under FakeTensorMode and prints its traced peak next to the analytic figure.
"""

from __future__ import annotations

import json
import sys

import click


from .errors import EXIT_USER, UserError, handle_errors

ALL = "all"


def _load(path: str):
    from qcompile.compiler.load import load_spec

    try:  # the plan itself is the report: a budget overflow must not stop it from being shown
        return load_spec(path, memory_check=False)
    except TypeError:
        return load_spec(path)


def _trace_line(spec, arch, result) -> str:
    from qcompile.compiler.planner.trace import trace_spec_peak
    from qcompile.schemas.units import format_bytes

    try:
        traced, analytic = trace_spec_peak(spec, arch)
    except ImportError as exc:
        raise UserError(f"--trace needs the train extra ({exc.name} is not installed)",
                        "pip install -e '.[train]'") from None
    error = (analytic - traced) / traced
    return (f"trace (one step, single device, FakeTensorMode): traced {format_bytes(traced)}, "
            f"analytic {format_bytes(analytic)} ({error:+.1%})")


@click.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--backend", "backend", default=None, metavar="all|KIND",
              help="Plan this backend, or every backend side by side (default: the spec's; auto picks).")
@click.option("--trace", is_flag=True, help="Also trace one real step of this model shape (needs torch).")
@handle_errors
def plan(spec_path: str, as_json: bool, backend: str | None, trace: bool) -> None:
    """Predict GPU and host memory of SPEC per backend and check its hardware budget."""
    from qcompile.compiler import planner

    loaded = _load(spec_path)
    spec = loaded.spec
    try:
        arch = planner.resolve_architecture(spec, loaded.spec_dir)
    except planner.ArchitectureUnknown as exc:
        raise UserError(exc.message, exc.hint) from None
    kind = backend or spec.backend.kind
    known = list(planner.placements.PLACEMENTS)
    if kind not in (ALL, "auto", *known):
        raise UserError(f"unknown backend {kind!r}", f"use all, auto or one of {', '.join(known)}")

    chosen = None
    if kind == ALL:
        plans = [planner.plan(spec, arch, k) for k in planner.placements.SPEED_ORDER]
    elif kind == "auto":
        chosen, plans = planner.choose_backend(spec, arch)
        plans = [p for p in plans if p.backend == chosen] if chosen else plans
    else:
        plans = [planner.plan(spec, arch, kind)]
    fits = any(p.fits for p in plans)
    fixes = [] if fits else planner.suggest_fixes(spec, arch, plans[0].backend)
    traced = _trace_line(spec, arch, plans[0]) if trace else None

    if as_json:
        doc = plans[0].to_json() if len(plans) == 1 else {"plans": [p.to_json() for p in plans]}
        if kind in ("auto", ALL):
            doc = {"chosen": chosen, "fits": fits, "plans": [p.to_json() for p in plans]}
        doc["suggestions"] = [f.__dict__ for f in fixes]
        if traced:
            doc["trace"] = traced
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    else:
        a = arch
        click.echo(f"model: {spec.model.name} ({a.num_params():,} parameters, {a.num_layers} layers; {a.source})")
        if kind == "auto":
            click.echo(f"auto: {chosen or 'no backend fits'}")
        for p in plans:
            click.echo("")
            click.echo(p.to_text(), nl=False)
        if fixes:
            click.echo("\nwould fit:")
            for f in fixes:
                click.echo(f"  - {f.text()}")
        if traced:
            click.echo("\n" + traced)
    sys.exit(0 if fits else EXIT_USER)
