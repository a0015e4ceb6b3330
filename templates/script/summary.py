"""Summary: what a run did and how its measured memory compared with the plan, as summary.json in the
output directory and a short table. Plain Python on purpose: qcompile's launcher imports this part too.

Which plan figure a measurement is compared with:
- CUDA: max_memory_allocated with the device's tensor bytes; max_memory_reserved with its peak less the
  CUDA context (the caching allocator does not hold the context). A process's devices are summed.
- CPU: a rank's peak RSS with its "device" peak (on CPU the device is the process's own memory) plus its
  share of the node's host peak (max of load and training, which holds the runtime and offloaded states).
  The node's sampled memory (proportional set sizes added up, so the ranks' shared mapped weights count
  once) with the node's device peaks plus the host peak. The budgets are compared the same way."""

import json
import os
from pathlib import Path

GiB, MiB, KiB = 2**30, 2**20, 2**10


def read_jsonl(path: Path) -> list:
    records = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue  # a line cut by a kill: the rest still counts
    except OSError:
        pass
    return records


def read_ranks(output_dir: Path) -> list:
    found = []
    for path in sorted((output_dir / ".telemetry").glob("rank-*.json")):
        try:
            found.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return sorted(found, key=lambda record: record["rank"])


def planned_devices(plan: dict, record: dict, world_size: int) -> list:
    """The plan's devices a rank's process holds: its own device when the plan lists one per rank (or one
    per local rank), every device for a single process, none when the plan's layout says otherwise."""
    devices = plan.get("devices") or []
    if len(devices) == world_size:
        return [devices[record["rank"]]]
    if world_size == 1:
        return devices
    if len(devices) == record["local_world_size"]:
        return [devices[record["local_rank"]]]
    return []


def ratio(measured: int | None, planned: int | None) -> float | None:
    return round(measured / planned, 3) if measured is not None and planned else None


def host_peak(plan: dict) -> int:
    host = plan.get("host") or {}
    return max(host.get("load_peak_bytes", 0), host.get("train_peak_bytes", 0))


def memory_rows(plan: dict | None, ranks: list, accelerator: str, world_size: int) -> list:
    """One row per measured figure: {what, measured_bytes, planned_bytes, ratio, budget_bytes}."""
    plan, rows = plan or {}, []
    host_budget = (plan.get("host") or {}).get("budget_bytes")
    for record in ranks:
        devices = planned_devices(plan, record, world_size)
        local = max(record["local_world_size"], 1)
        if accelerator == "cuda":
            for name, key, planned in (
                ("allocated", "allocated_bytes", sum(d["tensor_bytes"] for d in devices)),
                ("reserved", "reserved_bytes",
                 sum(d["peak_bytes"] - d["breakdown"].get("runtime_context", 0) for d in devices)),
            ):
                measured = sum(c[key] for c in record["cuda"]) if record["cuda"] else None
                rows.append({"what": f"rank {record['rank']} cuda {name}", "measured_bytes": measured,
                             "planned_bytes": planned or None, "ratio": ratio(measured, planned),
                             "budget_bytes": sum(d["budget_bytes"] for d in devices) or None})
            planned_rss = host_peak(plan) // local if plan else None
        else:
            planned_rss = sum(d["peak_bytes"] for d in devices) + host_peak(plan) // local if plan else None
        budget = (sum(d["budget_bytes"] for d in devices) if accelerator != "cuda" else 0) + (
            host_budget // local if host_budget else 0)
        rows.append({"what": f"rank {record['rank']} peak RSS", "measured_bytes": record["peak_rss_bytes"],
                     "planned_bytes": planned_rss or None, "ratio": ratio(record["peak_rss_bytes"], planned_rss),
                     "budget_bytes": budget or None})
    for record in ranks:
        if "node_peak_bytes" not in record:
            continue
        on_node = [planned_devices(plan, r, world_size) for r in ranks if r["node"] == record["node"]]
        device_part = sum(d["peak_bytes"] for ds in on_node for d in ds) if accelerator != "cuda" else 0
        planned = device_part + host_peak(plan) if plan else None
        budget = (sum(d["budget_bytes"] for ds in on_node for d in ds) if accelerator != "cuda" else 0) + (
            host_budget or 0)
        rows.append({"what": f"node {record['node']} memory", "measured_bytes": record["node_peak_bytes"],
                     "planned_bytes": planned or None, "ratio": ratio(record["node_peak_bytes"], planned),
                     "budget_bytes": budget or None})
    return rows


def build_summary(output_dir: Path, plan: dict | None, accelerator: str, world_size: int, status: str,
                  error: str | None, wall_s: float) -> dict:
    """summary.json's content from what the run left in output_dir (metrics.jsonl, the ranks' peaks)."""
    metrics = read_jsonl(output_dir / "metrics.jsonl")
    losses = [m for m in metrics if m.get("loss") is not None]
    evals = [m for m in metrics if m.get("eval_loss") is not None]
    ranks = read_ranks(output_dir)
    lead = next((r for r in ranks if r["rank"] == 0), {})
    train_s, tokens_run = lead.get("train_s"), lead.get("tokens_this_run")
    adapter = output_dir / "adapter_model.safetensors"
    return {
        "status": status,
        "error": error,
        "steps": losses[-1]["step"] if losses else 0,
        "max_steps": losses[-1]["max_steps"] if losses else None,
        "tokens": losses[-1]["tokens"] if losses else 0,
        "wall_s": round(wall_s, 3),
        "train_s": round(train_s, 3) if train_s is not None else None,
        "tokens_per_s": round(tokens_run / train_s, 1) if train_s and tokens_run is not None else None,
        "first_loss": losses[0]["loss"] if losses else None,
        "last_loss": losses[-1]["loss"] if losses else None,
        "last_eval_loss": evals[-1]["eval_loss"] if evals else None,
        "adapter": str(output_dir) if status == "completed" and adapter.exists() else None,
        "accelerator": accelerator,
        "world_size": world_size,
        "plan": "memory_plan.json" if plan else None,
        "memory": memory_rows(plan, ranks, accelerator, world_size),
    }


def size_text(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def summary_table(summary: dict) -> list:
    """The summary as the lines a terminal shows."""
    def number(value, form):
        return "-" if value is None else format(value, form)

    lines = [f"summary: {summary['status']}, {summary['steps']}/{summary['max_steps'] or '?'} steps, "
             f"{summary['tokens']:,} tokens, {summary['wall_s']:.1f} s wall, "
             f"{number(summary['tokens_per_s'], ',.0f')} tokens/s, loss {number(summary['first_loss'], '.4f')} -> "
             f"{number(summary['last_loss'], '.4f')}"
             + (f", eval_loss {summary['last_eval_loss']:.4f}" if summary["last_eval_loss"] is not None else "")]
    if summary["adapter"]:
        lines.append(f"adapter: {summary['adapter']}")
    if summary["memory"]:
        width = max(len(row["what"]) for row in summary["memory"])
        lines.append(f"  {'memory':<{width}}  {'measured':>10}  {'planned':>10}  {'ratio':>6}  {'budget':>10}")
        for row in summary["memory"]:
            lines.append(f"  {row['what']:<{width}}  {size_text(row['measured_bytes']):>10}  "
                         f"{size_text(row['planned_bytes']):>10}  {number(row['ratio'], '.2f'):>6}  "
                         f"{size_text(row['budget_bytes']):>10}")
    return lines


def write_summary(output_dir: Path, summary: dict) -> Path:
    path = output_dir / "summary.json"
    temporary = path.with_name(".summary.json.tmp")
    temporary.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path
