"""What a run reports besides its adapter: loss.svg, the summary against the plan, the progress view,
the trackers' check. Plain Python, no torch: the summary part is shared by train.py and the launcher."""

import io
import json
import xml.etree.ElementTree as ET

import pytest

from qcompile.compiler.launch import ProgressView, check_trackers
from qcompile.compiler.loss_picture import BOTTOM, HEIGHT, LEFT, RIGHT, TOP, WIDTH, write_loss_svg
from qcompile.errors import UserError
from qcompile.schemas.spec import Spec
from qcompile.templates.script.summary import build_summary, memory_rows, summary_table

SVG = "{http://www.w3.org/2000/svg}"


def points(svg_path):
    tree = ET.parse(svg_path)
    out = {}
    for group in tree.getroot().iter(f"{SVG}g"):
        out[group.get("data-series")] = [(int(c.get("data-step")), float(c.get("data-value")),
                                          float(c.get("cx")), float(c.get("cy"))) for c in group.iter(f"{SVG}circle")]
    return out


def test_loss_svg_points_follow_metrics(tmp_path):
    records = [{"step": s, "max_steps": 6, "loss": 8.0 - s, "tokens": 10 * s} for s in range(1, 7)]
    records.insert(3, {"step": 3, "max_steps": 6, "eval_loss": 5.5})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 7, "lo')
    path = write_loss_svg(tmp_path)
    drawn = points(path)
    assert [p[:2] for p in drawn["loss"]] == [(s, 8.0 - s) for s in range(1, 7)]
    assert [p[:2] for p in drawn["eval_loss"]] == [(3, 5.5)]
    # x: step 1 at the left edge, step 6 at the right; y: the highest loss at the top, the lowest at the bottom
    first, last = drawn["loss"][0], drawn["loss"][-1]
    assert (first[2], last[2]) == (LEFT, WIDTH - RIGHT)
    assert (first[3], last[3]) == (TOP, HEIGHT - BOTTOM)
    for step, value, x, y in drawn["loss"] + drawn["eval_loss"]:
        assert x == pytest.approx(LEFT + (step - 1) / 5 * (WIDTH - LEFT - RIGHT), abs=0.01)
        assert y == pytest.approx(TOP + (7.0 - value) / 5 * (HEIGHT - TOP - BOTTOM), abs=0.01)


def test_loss_svg_keeps_a_resumed_steps_last_value_and_skips_an_empty_log(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": v}) + "\n"
                                                    for s, v in [(1, 3.0), (2, 2.0), (2, 2.5), (3, 1.0)]))
    assert [p[:2] for p in points(write_loss_svg(tmp_path))["loss"]] == [(1, 3.0), (2, 2.5), (3, 1.0)]
    (tmp_path / "metrics.jsonl").write_text("")
    assert write_loss_svg(tmp_path / "missing") is None and write_loss_svg(tmp_path) is None


def device(name, peak, tensors, budget, context=0):
    return {"name": name, "peak_bytes": peak, "tensor_bytes": tensors, "budget_bytes": budget,
            "breakdown": {"runtime_context": context}}


PLAN = {"devices": [device("rank 0", 100, 80, 1000), device("rank 1", 100, 80, 1000)],
        "host": {"load_peak_bytes": 300, "train_peak_bytes": 400, "budget_bytes": 4000}}


def rank(number, rss, cuda=(), node_peak=None):
    record = {"rank": number, "local_rank": number, "node": 0, "local_world_size": 2, "peak_rss_bytes": rss,
              "cuda": list(cuda)}
    if node_peak is not None:
        record["node_peak_bytes"] = node_peak
    return record


def test_cpu_rank_is_compared_with_its_device_plus_its_share_of_the_host():
    rows = memory_rows(PLAN, [rank(0, 150, node_peak=270), rank(1, 120)], "cpu", 2)
    by = {r["what"]: r for r in rows}
    assert by["rank 0 peak RSS"]["planned_bytes"] == 100 + 400 // 2
    assert by["rank 0 peak RSS"]["ratio"] == 0.5 and by["rank 1 peak RSS"]["ratio"] == 0.4
    assert by["rank 0 peak RSS"]["budget_bytes"] == 1000 + 4000 // 2
    assert by["node 0 memory"]["planned_bytes"] == 2 * 100 + 400 and by["node 0 memory"]["ratio"] == 0.45
    assert by["node 0 memory"]["budget_bytes"] == 2 * 1000 + 4000


def test_cuda_rank_is_compared_allocated_with_tensors_reserved_with_peak_less_context():
    plan = {**PLAN, "devices": [device("rank 0", 130, 80, 1000, context=30), device("rank 1", 130, 80, 1000, 30)]}
    cuda = [{"device": 0, "allocated_bytes": 60, "reserved_bytes": 90}]
    by = {r["what"]: r for r in memory_rows(plan, [rank(0, 500, cuda), rank(1, 500, cuda)], "cuda", 2)}
    assert by["rank 1 cuda allocated"]["ratio"] == 0.75 and by["rank 1 cuda reserved"]["ratio"] == 0.9
    assert by["rank 0 cuda reserved"]["budget_bytes"] == 1000
    assert by["rank 0 peak RSS"]["planned_bytes"] == 200  # the host's share only: the device is not in RSS


def test_summary_reads_the_runs_files_and_prints_a_table(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "max_steps": 2, "loss": 3.0, "tokens": 100}) + "\n"
        + json.dumps({"step": 2, "max_steps": 2, "loss": 2.0, "tokens": 200}) + "\n"
        + json.dumps({"step": 2, "max_steps": 2, "eval_loss": 2.5}) + "\n")
    (tmp_path / ".telemetry").mkdir()
    (tmp_path / ".telemetry" / "rank-0.json").write_text(json.dumps({**rank(0, 150, node_peak=300), "train_s": 2.0,
                                                                      "tokens_this_run": 200}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"x")
    summary = build_summary(tmp_path, PLAN, "cpu", 2, "completed", None, 10.0)
    assert (summary["steps"], summary["tokens"], summary["tokens_per_s"]) == (2, 200, 100.0)
    assert (summary["first_loss"], summary["last_loss"], summary["last_eval_loss"]) == (3.0, 2.0, 2.5)
    assert summary["adapter"] == str(tmp_path)
    table = "\n".join(summary_table(summary))
    assert "summary: completed, 2/2 steps, 200 tokens" in table and "loss 3.0000 -> 2.0000" in table
    assert "rank 0 peak RSS" in table and "0.50" in table
    failed = build_summary(tmp_path, None, "cpu", 2, "failed", "step 2: loss is nan", 3.0)
    assert failed["adapter"] is None and failed["memory"][0]["planned_bytes"] is None


def test_progress_view_drops_rank_prefixes_and_repeats():
    shown = []
    view = ProgressView(shown.append, tty=False)
    for line in ["[default0]:64 examples", "[default1]:built ok", "[default0]:built ok", "[default1]:only here",
                 "[default0]:step 1/2 | loss 1.0 | 5 tok/s | elapsed 0:00:01 | eta 0:00:01", "launcher line"]:
        view(line)
    assert shown == ["64 examples", "rank 1: built ok", "built ok", "rank 1: only here",
                     "step 1/2 | loss 1.0 | 5 tok/s | elapsed 0:00:01 | eta 0:00:01", "launcher line"]


def test_progress_view_draws_a_bar_on_a_terminal(monkeypatch):
    tqdm = pytest.importorskip("tqdm")
    screen = io.StringIO()
    monkeypatch.setattr(tqdm, "tqdm", lambda **kw: tqdm.std.tqdm(file=screen, **kw))
    shown = []
    view = ProgressView(shown.append, tty=True)
    view("[default0]:step 1/4 | loss 2.0000 | 5 tok/s | elapsed 0:00:01 | eta 0:00:03")
    view("[default0]:step 2/4 | loss 1.5000 | 6 tok/s | elapsed 0:00:02 | eta 0:00:02")
    assert view.bar.n == 2 and view.bar.total == 4
    view.close()
    assert shown == [] and "2/4" in screen.getvalue() and "loss 1.5000" in screen.getvalue()


def spec_with(report_to):
    return Spec.model_validate({
        "version": 1, "model": {"name": "m"},
        "hardware": {"accelerator": "cpu", "device_memory": "1GiB", "host_memory": "4GiB"},
        "lora": {"target_modules": ["q_proj"]}, "backend": "naive-model-parallel", "data": {"path": "d.jsonl"},
        "training": {"output_dir": "out", "report_to": report_to}})


def test_a_tracker_that_is_not_installed_stops_the_run_before_launch(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(UserError) as error:
        check_trackers(spec_with(["mlflow"]))
    assert "training.report_to names mlflow, which is not installed" in str(error.value)
    assert error.value.hint.startswith("pip install mlflow")


def test_report_to_names_each_known_tracker_once():
    assert spec_with(["tensorboard", "wandb"]).training.report_to == ["tensorboard", "wandb"]
    for bad in (["tensorboard", "tensorboard"], ["comet"], "tensorboard"):
        with pytest.raises(ValueError):
            spec_with(bad)


def test_the_launcher_writes_the_summary_a_killed_job_did_not(tmp_path):
    import time

    from qcompile.compiler.launch import after_run

    out, build = tmp_path / "out", tmp_path / "build"
    (out / ".telemetry").mkdir(parents=True)
    build.mkdir()
    started = time.time() - 1
    (out / "metrics.jsonl").write_text(json.dumps({"step": 1, "max_steps": 9, "loss": 3.0, "tokens": 50}) + "\n")
    (out / ".telemetry" / "rank-0.json").write_text(json.dumps(rank(0, 150, node_peak=300)))
    (out / ".telemetry" / "rank-1.json").write_text(json.dumps(rank(1, 120)))
    (build / "train_config.json").write_text(json.dumps({"accelerator": "cpu", "world_size": 2}))
    (build / "memory_plan.json").write_text(json.dumps(PLAN))
    shown = []
    after_run(out, shown.append, build, started)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "killed" in summary["error"] and summary["steps"] == 1
    assert [r["ratio"] for r in summary["memory"]] == [0.5, 0.4, 0.5]
    assert shown[0].startswith("summary: failed, 1/9 steps") and shown[-1] == f"loss curve: {out / 'loss.svg'}"
    (out / "summary.json").write_text('{"status": "completed"}')  # the job's own summary is kept
    after_run(out, shown.append, build, started)
    assert json.loads((out / "summary.json").read_text()) == {"status": "completed"}
