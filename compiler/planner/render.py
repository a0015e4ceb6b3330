"""Plans as tables: a fixed-width one for the terminal and Markdown for memory_plan.md."""

from __future__ import annotations

from qcompile.schemas.units import format_bytes

COLUMNS = ("weights", "lora_states", "activations", "logits", "overhead", "total", "budget", "headroom")


def _row(device) -> list[str]:
    b = device.breakdown
    overhead = b.get("comm_buckets", 0) + b.get("runtime_context", 0) + b.get("fragmentation", 0)
    values = [b["weights"], b["lora_states"], b["activations"], b["logits"], overhead,
              device.peak, device.budget, device.budget - device.peak]
    return [device.name] + [format_bytes(v) for v in values]


def _device_rows(plan) -> list[list[str]]:
    """Consecutive identical devices (every ZeRO rank) collapse into one row: "rank 0..7"."""
    rows: list[list[str]] = []
    first_name = ""
    for device in plan.devices:
        row = _row(device)
        if rows and rows[-1][1:] == row[1:]:
            rows[-1][0] = f"{first_name}..{device.name.split(' ')[-1]}"
            continue
        first_name = device.name
        rows.append(row)
    return rows


def _host_lines(plan) -> list[str]:
    h = plan.host
    lines = [
        f"host RAM per node: at load {format_bytes(h.load_peak)}, in training {format_bytes(h.train_peak)}, "
        f"budget {format_bytes(h.budget)}",
        f"disk: {format_bytes(h.disk)} (offloaded weights and one checkpoint)",
    ]
    return lines + [f"note: {n}" for n in plan.notes]


def _verdict(plan) -> list[str]:
    if plan.fits:
        return [f"{plan.backend}: fits"]
    return [f"{plan.backend}: does NOT fit"] + [f"  - {r}" for r in plan.reasons]


def plan_text(plan) -> str:
    header = ["device", *COLUMNS]
    rows = [header] + _device_rows(plan)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    table = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    return "\n".join(_verdict(plan) + table + _host_lines(plan)) + "\n"


def plan_markdown(plan) -> str:
    header = ["device", *COLUMNS]
    lines = [f"# Memory plan: {plan.backend}", ""] + _verdict(plan) + [""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * len(COLUMNS)) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in _device_rows(plan)]
    lines.append("")
    lines += [f"- {line}" for line in _host_lines(plan)]
    return "\n".join(lines) + "\n"
