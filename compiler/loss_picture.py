"""The loss curve as a picture (loss.svg in the output directory, drawn by `qcompile run` after the job):
training loss and eval loss per step, read from the run's metrics.jsonl. The coordinates are computed here
as plain numbers; the sandboxed template only draws them, so the light core needs no plotting library."""

from __future__ import annotations

import json
from pathlib import Path

from qcompile.compiler.render import render

WIDTH, HEIGHT, LEFT, TOP, RIGHT, BOTTOM = 640, 320, 60, 30, 20, 40  # pixels
SERIES = (("loss", "#4e79a7"), ("eval_loss", "#e15759"))
TICKS = 5


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl's records; a line cut short by a killed run is skipped."""
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) < 1e300


def loss_picture(records: list[dict], title: str) -> dict:
    """Plain data for templates/loss.svg.j2: each series' points in pixels, and the axes' ticks. A step
    logged twice (a resumed run) keeps its last value."""
    series = {}
    for key, _ in SERIES:
        by_step = {r["step"]: float(r[key]) for r in records if _finite(r.get(key))}
        series[key] = sorted(by_step.items())
    points = [p for values in series.values() for p in values]
    if not points:
        return {"title": title, "width": WIDTH, "height": HEIGHT, "series": [], "x_ticks": [], "y_ticks": [],
                "empty": True, "left": LEFT, "top": TOP, "right": WIDTH - RIGHT, "bottom": HEIGHT - BOTTOM}
    x_low, x_high = min(s for s, _ in points), max(s for s, _ in points)
    y_low, y_high = min(v for _, v in points), max(v for _, v in points)
    x_span, y_span = (x_high - x_low) or 1, (y_high - y_low) or 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(step):
        return round(LEFT + (step - x_low) / x_span * plot_w, 2)

    def y(value):
        return round(TOP + (y_high - value) / y_span * plot_h, 2)

    drawn = [{"name": key, "colour": colour, "points": [{"step": s, "value": v, "x": x(s), "y": y(v)}
                                                        for s, v in series[key]]}
             for key, colour in SERIES if series[key]]
    for line in drawn:
        line["path"] = " ".join(f"{p['x']},{p['y']}" for p in line["points"])
    x_ticks = sorted({round(x_low + i * x_span / TICKS) for i in range(TICKS + 1)} & set(range(x_low, x_high + 1)))
    y_ticks = [y_low + i * y_span / TICKS for i in range(TICKS + 1)]
    return {"title": title, "width": WIDTH, "height": HEIGHT, "series": drawn, "empty": False,
            "x_ticks": [{"x": x(s), "text": str(s)} for s in x_ticks],
            "y_ticks": [{"y": y(v), "text": f"{v:.3g}"} for v in y_ticks],
            "left": LEFT, "top": TOP, "right": WIDTH - RIGHT, "bottom": HEIGHT - BOTTOM}


def write_loss_svg(output_dir: Path) -> Path | None:
    """output_dir/loss.svg from output_dir/metrics.jsonl; None when the run logged nothing."""
    metrics = output_dir / "metrics.jsonl"
    if not metrics.is_file():
        return None
    records = read_metrics(metrics)
    if not records:
        return None
    path = output_dir / "loss.svg"
    temporary = path.with_name(".loss.svg.tmp")
    temporary.write_text(render("loss.svg.j2", loss_picture(records, f"loss per step: {output_dir.name}")),
                         encoding="utf-8")
    temporary.replace(path)
    return path
