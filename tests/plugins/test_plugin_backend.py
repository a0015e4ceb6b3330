"""A third-party backend installed with pip from tests/plugins/relay: found through the `qcompile.backends`
entry-point group, accepted by `backend:` in both forms, validated, planned, emitted and run; its
broken siblings (import error, not a backend, a built-in's kind) are one warning each."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).parent
REPO = HERE.parents[1]
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory) -> Path:
    """The relay package installed into its own site folder, as `pip install` would for a user."""
    site = tmp_path_factory.mktemp("plugin-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(HERE / "relay")], check=True, capture_output=True)
    return site


def qcompile(site: Path, *args, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "qcompile", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def relay_spec(tmp_path: Path, backend, **training) -> Path:
    data = yaml.safe_load((EXAMPLES / "zero2-cpu.yaml").read_text())
    data["model"]["name"] = str(EXAMPLES / "models" / "tiny-qwen2")
    data["data"]["path"] = str(EXAMPLES / "data" / "alpaca.jsonl")
    data["hardware"]["devices_per_node"] = 1
    data["backend"] = backend
    data["training"].update({"output_dir": str(tmp_path / "out"), **training})
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_bad_plugins_are_one_warning_each_and_builtins_keep_working(plugin_site):
    result = qcompile(plugin_site, "validate", "--no-memory-check", EXAMPLES / "zero3-cpu.yaml")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: backend plugin")]
    assert len(warnings) == 3 and all("package qcompile-relay" in w for w in warnings), result.stderr
    assert "'broken-import'" in warnings[0] and "No module named 'qcompile_relay_missing_dependency'" in warnings[0]
    assert "'collides'" in warnings[1] and "'deepspeed-zero2', which qcompile already has" in warnings[1]
    assert "'not-a-backend'" in warnings[2] and "is not a backend: it lacks kind" in warnings[2]
    assert "Traceback" not in result.stderr


def test_plugin_backend_is_validated_planned_and_emitted(plugin_site, tmp_path):
    named = relay_spec(tmp_path, "zero2-relay")
    assert qcompile(plugin_site, "validate", named).returncode == 0
    plan = qcompile(plugin_site, "plan", named, "--backend", "all", "--json")
    assert {p["backend"] for p in json.loads(plan.stdout)["plans"]} >= {"zero2-relay", "deepspeed-zero2"}
    mapping = relay_spec(tmp_path, {"kind": "zero2-relay", "reduce_bucket_size": 1234})
    emitted = qcompile(plugin_site, mapping, "--emit", "-o", tmp_path / "build")
    assert emitted.returncode == 0, emitted.stderr
    assert json.loads((tmp_path / "build" / "ds_config.json").read_text())["zero_optimization"][
        "reduce_bucket_size"] == 1234
    assert json.loads((tmp_path / "build" / "manifest.json").read_text())["backend"] == "zero2-relay"
    wrong = relay_spec(tmp_path, {"kind": "zero2-relay", "prefetch_bucket_size": 1})
    refused = qcompile(plugin_site, "validate", wrong)
    assert refused.returncode == 1 and "backend.prefetch_bucket_size: unknown key" in refused.stdout
    typo = qcompile(plugin_site, "validate", relay_spec(tmp_path, "zero2-rely"))
    assert typo.returncode == 1 and "did you mean 'zero2-relay'" in typo.stdout


@pytest.mark.slow
def test_plugin_backend_runs_a_real_tiny_job(plugin_site, tmp_path, model_dir):
    pytest.importorskip("deepspeed")
    spec = relay_spec(tmp_path, "zero2-relay", max_steps=2, save_steps=2)
    result = qcompile(plugin_site, "run", spec, "-o", tmp_path / "build")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert len((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()) >= 2
