"""A real run's reports (TensorBoard event files, summary.json against the plan, loss.svg) and its export
(`qcompile export`: merged logits equal base + adapter), and a real preflight that leaves the user's
folders exactly as they were."""

import hashlib
import importlib.util
import json
import os
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from qcompile.cli.main import cli

from .jobs import REPO, metrics, write_spec

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.slow
def test_a_run_leaves_event_files_a_summary_against_the_plan_and_loss_svg(tmp_path, model_dir, monkeypatch):
    pytest.importorskip("deepspeed")
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    out = tmp_path / "out"
    # wandb (offline) and mlflow (a file store) too where they are installed: they are not in the train extra
    optional = [t for t in ("wandb", "mlflow") if importlib.util.find_spec(t) is not None]
    monkeypatch.setenv("WANDB_MODE", "offline")
    spec = write_spec(tmp_path, "zero2-cpu.yaml", data={"eval_fraction": 0.125},
                      training={"output_dir": str(out), "max_steps": 4, "save_steps": 4, "eval_steps": 2,
                                "report_to": ["tensorboard", *optional], "run_name": "report-test"})
    result = CliRunner().invoke(cli, ["run", str(spec), "-o", str(tmp_path / "build")])
    assert result.exit_code == 0, result.output
    assert "[default" not in result.output  # torchrun's rank prefixes are not shown
    records = metrics(out)
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all(r["grad_norm"] > 0 and r["learning_rate"] > 0 and r["tokens_per_s"] > 0 for r in steps)
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [2, 4]

    tensorboard = event_accumulator.EventAccumulator(str(out / "tensorboard"))
    tensorboard.Reload()
    for tag, key in (("train/loss", "loss"), ("train/learning_rate", "learning_rate"),
                     ("train/grad_norm", "grad_norm")):
        events = tensorboard.Scalars(tag)
        assert [e.step for e in events] == [r["step"] for r in steps]
        assert [e.value for e in events] == pytest.approx([r[key] for r in steps], rel=1e-5)
    assert [e.step for e in tensorboard.Scalars("eval/loss")] == [2, 4]
    if "mlflow" in optional:
        (run,) = (out / "mlruns" / "0").glob("*/tags/mlflow.runName")
        assert run.read_text() == "report-test"
        logged = [line.split() for line in (run.parents[1] / "metrics" / "loss").read_text().splitlines()]
        assert [int(step) for _, _, step in logged] == [r["step"] for r in steps]
        assert [float(value) for _, value, _ in logged] == pytest.approx([r["loss"] for r in steps], rel=1e-6)
    if "wandb" in optional:
        assert len(list((out / "wandb").glob("offline-run-*/run-*.wandb"))) == 1

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 4 and summary["adapter"] == str(out)
    assert summary["first_loss"] == steps[0]["loss"] and summary["last_loss"] == steps[-1]["loss"]
    assert summary["tokens"] == steps[-1]["tokens"] and summary["tokens_per_s"] > 0
    assert summary["last_eval_loss"] == evals[-1]["eval_loss"]
    rows = {r["what"]: r for r in summary["memory"]}
    assert set(rows) == {"rank 0 peak RSS", "rank 1 peak RSS", "node 0 memory"}
    plan = json.loads((tmp_path / "build" / "memory_plan.json").read_text())
    host = max(plan["host"]["load_peak_bytes"], plan["host"]["train_peak_bytes"])
    assert rows["rank 1 peak RSS"]["planned_bytes"] == plan["devices"][1]["peak_bytes"] + host // 2
    for row in rows.values():  # a real process: more than its tensors, and within the plan's order of size
        assert 0.05 < row["ratio"] < 5 and row["ratio"] == round(row["measured_bytes"] / row["planned_bytes"], 3)
    assert "summary: completed, 4/4 steps" in result.output and "rank 0 peak RSS" in result.output

    circles = {g.get("data-series"): [(int(c.get("data-step")), float(c.get("data-value")))
                                      for c in g.iter(f"{SVG}circle")]
               for g in ET.parse(out / "loss.svg").getroot().iter(f"{SVG}g")}
    assert circles["loss"] == [(r["step"], r["loss"]) for r in steps]
    assert circles["eval_loss"] == [(r["step"], r["eval_loss"]) for r in evals]
    assert f"loss curve: {out / 'loss.svg'}" in result.output
    exports_and_matches(spec, out, model_dir, tmp_path)


def exports_and_matches(spec, run, model_dir, tmp_path):
    """`qcompile export` of this real run's adapter: in memory and shard by shard to the same bytes, and the
    merged model's logits are base + adapter's (checked on the run above to spare another launch)."""
    torch = pytest.importorskip("torch")
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    memory = CliRunner().invoke(cli, ["export", str(spec)])
    assert memory.exit_code == 0, memory.output
    shards = CliRunner().invoke(cli, ["export", str(spec), "--mode", "shards", "-o", str(tmp_path / "shards")])
    assert shards.exit_code == 0, shards.output
    merged = load_file(run / "merged" / "model.safetensors")
    by_shard = load_file(tmp_path / "shards" / "model.safetensors")
    assert merged.keys() == by_shard.keys() and all(torch.equal(v, by_shard[k]) for k, v in merged.items())

    ids = torch.randint(0, 1000, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        plain = base(ids).logits
        expected = PeftModel.from_pretrained(base, run)(ids).logits
        got = AutoModelForCausalLM.from_pretrained(run / "merged", dtype=torch.float32)(ids).logits
    assert (expected - plain).abs().max() > 1e-2  # the run moved the adapter: the comparison can fail
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)


def tree(folder):
    """Every path under folder with its content hash (files) or None (folders), and its mtime."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            digest = hashlib.sha256(open(path, "rb").read()).hexdigest() if name in files else None
            found[os.path.relpath(path, folder)] = (digest, os.stat(path).st_mtime_ns)
    return found


@pytest.mark.slow
def test_preflight_prints_its_verdict_and_leaves_every_folder_as_it_was(tmp_path, model_dir, monkeypatch):
    pytest.importorskip("deepspeed")
    project, out = tmp_path / "project", tmp_path / "project" / "out"
    spec = write_spec(project, "zero2-cpu.yaml", training={"output_dir": str(out), "max_steps": 20})
    out.mkdir()  # an empty output directory: the real run may use it, so the preflight may run
    monkeypatch.chdir(project)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", os.environ.get("TORCH_EXTENSIONS_DIR")  # DeepSpeed's built ops
                       or str(REPO / ".cache" / "torch_extensions"))
    before = tree(project)
    result = CliRunner().invoke(cli, ["run", str(spec), "--preflight", "--steps", "2"])
    assert result.exit_code == 0, result.output
    assert tree(project) == before  # nothing written, not even the build directory
    lines = result.output.splitlines()
    assert any(line.startswith("memory: fits with ") and "% headroom (tightest: " in line for line in lines)
    assert "checkpoint round-trip: ok (saved at step 2, resumed, trained step 3)" in lines
    assert any(line.startswith("time: ") and "for the run's 20 steps" in line for line in lines)
    assert lines[-1].startswith("preflight: ready to run; removed ") and lines[-1].endswith(f"{out} was not touched")
    workdir = lines[-1].split("removed ")[1].split(";")[0]
    assert not os.path.exists(workdir)

    (out / "notes.txt").write_text("mine")  # what the real run would refuse, the preflight refuses
    refused = CliRunner().invoke(cli, ["run", str(spec), "--preflight"])
    assert refused.exit_code == 1 and "holds no qcompile run" in refused.output
