"""The memory plan as a picture (memory_plan.svg, `qcompile plan --svg`): one stacked bar per device
(weights, LoRA states, activations, logits, overhead) against its budget line, and the node's host RAM at
load and in training against the host budget. The geometry is computed here as plain numbers; the
sandboxed template only draws it, so the light core needs no plotting library."""

from __future__ import annotations

from qcompile.compiler.render import render
from qcompile.schemas.units import format_bytes

PARTS = (  # (label, breakdown keys, colour)
    ("weights", ("weights",), "#4e79a7"),
    ("LoRA states", ("lora_states",), "#f28e2b"),
    ("activations", ("activations",), "#59a14f"),
    ("logits", ("logits",), "#e15759"),
    ("overhead", ("comm_buckets", "runtime_context", "fragmentation"), "#bab0ac"),
)
BAR, GAP, CHART, TOP, LEFT = 28, 12, 260, 40, 70  # pixels


def _bar(label: str, segments: list[tuple[str, int, str]], budget: int, scale: float, x: int) -> dict:
    """A bar's rectangles (bottom up) and its budget line, in pixels from the top of the chart."""
    y, rects = TOP + CHART, []
    for name, value, colour in segments:
        height = value * scale
        y -= height
        rects.append({"name": name, "bytes": value, "text": format_bytes(value), "colour": colour,
                      "x": x, "y": round(y, 2), "height": round(height, 2)})
    total = sum(value for _, value, _ in segments)
    return {"label": label, "x": x, "rects": rects, "total": format_bytes(total), "fits": total <= budget,
            "budget_y": round(TOP + CHART - budget * scale, 2), "budget": format_bytes(budget)}


def plan_picture(plan) -> dict:
    """Plain data for templates/memory_plan.svg.j2."""
    devices = [(d.name, [(name, sum(d.breakdown.get(k, 0) for k in keys), colour) for name, keys, colour in PARTS],
                d.budget) for d in plan.devices]
    host = plan.host
    hosts = [("host at load", [("host RAM", host.load_peak, "#76b7b2")], host.budget),
             ("host in training", [("host RAM", host.train_peak, "#76b7b2")], host.budget)]
    device_top = max(max(sum(v for _, v, _ in parts), budget) for _, parts, budget in devices)
    host_top = max(host.load_peak, host.train_peak, host.budget)
    bars, x = [], LEFT
    for name, parts, budget in devices:
        bars.append(_bar(name, parts, budget, CHART / device_top, x))
        x += BAR + GAP
    x += 2 * GAP
    for name, parts, budget in hosts:
        bars.append(_bar(name, parts, budget, CHART / host_top, x))
        x += BAR + GAP
    verdict = "fits" if plan.fits else "does NOT fit"
    return {"title": f"{plan.backend}: {verdict}", "bars": bars, "bar_width": BAR, "top": TOP, "chart": CHART,
            "width": x + GAP, "height": TOP + CHART + 80,
            "legend": [{"name": name, "colour": colour} for name, _, colour in PARTS]}


def plan_svg(plan) -> str:
    return render("memory_plan.svg.j2", plan_picture(plan))
