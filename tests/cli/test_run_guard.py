"""`qcompile run` before launch: output protection, the run lock (two real processes), and resume
against the recorded spec. The job itself is replaced by a stand-in where training is not the point."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from qcompile.cli import run as run_module
from qcompile.cli.main import cli
from qcompile.compiler.launch import JobResult
from qcompile.compiler.run_guard import LOCK, _lock_holder, read_marker
from tests.conftest import TESTS


def make_spec(tmp_path: Path, **training) -> Path:
    """The tiny accelerate-offload spec in its own folder, training into out/."""
    shutil.copytree(TESTS / "specs" / "models", tmp_path / "models")
    shutil.copytree(TESTS / "specs" / "data", tmp_path / "data")
    return write_spec(tmp_path, **training)


def write_spec(tmp_path: Path, lora: dict | None = None, **training) -> Path:
    data = yaml.safe_load((TESTS / "specs" / "accelerate-offload.yaml").read_text())
    data["training"].update({"output_dir": "out", **training})
    data["lora"].update(lora or {})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def fake_job(monkeypatch):
    """Stands in for the launcher: records whether the run's lock was held while the job ran."""
    seen = []

    def job(build_dir, argv, env, echo=print, pass_fds=()):
        config = json.loads((Path(build_dir) / "train_config.json").read_text())
        out = (Path(build_dir) / config["training"]["output_dir"]).resolve()  # relative to the build
        seen.append({"holder": _lock_holder(out), "marker": read_marker(out), "argv": argv})
        return JobResult(0, None, [])

    monkeypatch.setattr(run_module, "run_job", job)
    return seen


def checkpoint(out: Path, step: int, max_steps: int) -> None:
    folder = out / "checkpoints" / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": max_steps}))
    (folder / "QCOMPILE_COMPLETE").write_text("")


# --------------------------------------------------------------------------- protection


def test_a_folder_with_user_files_is_refused_before_anything_is_written(tmp_path, fake_job):
    spec = make_spec(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "README.md").write_text("mine")
    result = invoke("run", spec, "-o", tmp_path / "build")
    assert result.exit_code == 1
    assert f"training.output_dir {tmp_path / 'out'} is not empty and holds no qcompile run" in result.output
    assert not (tmp_path / "build").exists() and fake_job == []
    assert sorted(os.listdir(tmp_path / "out")) == ["README.md"]


def test_missing_and_empty_folders_are_fine_and_the_run_is_marked(tmp_path, fake_job):
    spec = make_spec(tmp_path)
    (tmp_path / "out").mkdir()
    result = invoke("run", spec, "-o", tmp_path / "build")
    assert result.exit_code == 0, result.output
    marker = read_marker(tmp_path / "out")
    assert marker["values"]["lora.r"] == 8 and marker["values"]["backend.kind"] == "accelerate-offload"
    assert len(marker["spec"]["sha256"]) == 64 and len(marker["values"]["data.sha256"]) == 64
    assert fake_job[0]["holder"] == str(os.getpid())  # the lock is held while the job runs
    assert _lock_holder(tmp_path / "out") is None  # and released after it


def test_an_absolute_offload_folder_with_user_files_is_refused(tmp_path, fake_job):
    spec = make_spec(tmp_path)
    data = yaml.safe_load(spec.read_text())
    data["backend"] = {"kind": "accelerate-offload", "offload_folder": str(tmp_path / "scratch")}
    spec.write_text(yaml.safe_dump(data))
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "weights.bin").write_text("x")
    result = invoke("run", spec, "-o", tmp_path / "build")
    assert result.exit_code == 1 and f"offload folder {tmp_path / 'scratch'} is not empty" in result.output
    assert not (tmp_path / "out").exists()


def test_run_refuses_missing_data_that_validate_only_warns_about(tmp_path, fake_job):
    spec = make_spec(tmp_path)
    (tmp_path / "data" / "train.jsonl").unlink()
    assert invoke("validate", spec).exit_code == 0
    result = invoke("run", spec, "-o", tmp_path / "build")
    assert result.exit_code == 1 and "does not exist" in result.output and fake_job == []


def test_run_paths_are_the_paths_the_generated_script_uses(tmp_path):
    from qcompile.compiler.emit import compile_spec
    from qcompile.compiler.load import load_spec
    from qcompile.compiler.output_rules import run_paths

    for name in ("accelerate-offload", "naive-model-parallel"):
        loaded = load_spec(TESTS / "specs" / f"{name}.yaml")
        config = json.loads(compile_spec(loaded).files["train_config.json"])
        paths = run_paths(loaded.context.spec, loaded.spec_dir)
        assert Path(config["training"]["output_dir"]) == paths.output_dir
        assert Path(os.path.realpath(config["backend"]["offload_folder"])) == paths.offload_dir


# --------------------------------------------------------------------------- the lock

HOLDER = """
import sys
from qcompile.compiler.load import load_spec
from qcompile.compiler.run_guard import begin_run, check_run
loaded = load_spec(sys.argv[1])
start = check_run(loaded, False)
begin_run(start)  # exactly what `qcompile run` does before it launches
print("locked", flush=True)
sys.stdin.read()
"""


def qcompile(*args, cwd):
    return subprocess.run([sys.executable, "-m", "qcompile", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_second_run_is_refused_while_the_first_lives_and_not_after_a_kill_9(tmp_path):
    spec = make_spec(tmp_path)
    first = subprocess.Popen([sys.executable, "-c", HOLDER, str(spec)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert first.stdout.readline().strip() == "locked"
        started = time.monotonic()
        second = qcompile("run", spec, "-o", tmp_path / "build", cwd=tmp_path)
        assert time.monotonic() - started < 60
        assert second.returncode == 1
        lines = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert lines == [(f"error: another qcompile run (pid {first.pid}) is training into {tmp_path / 'out'}; "
                          "refusing to start a second one there")]
        assert "Traceback" not in second.stderr and "launch:" not in second.stderr
        assert not (tmp_path / "build").exists()  # refused before the build, let alone torchrun
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert (tmp_path / "out" / LOCK).exists()  # the file stays; the kernel dropped the lock
    again = qcompile("run", spec, "-o", tmp_path / "build", "--dry-run", cwd=tmp_path)
    assert again.returncode == 0, again.stderr


# --------------------------------------------------------------------------- resume


def test_without_resume_a_run_with_checkpoints_is_refused_before_launch(tmp_path, fake_job):
    spec = make_spec(tmp_path)
    assert invoke("run", spec, "-o", tmp_path / "build").exit_code == 0
    checkpoint(tmp_path / "out", 2, 4)
    result = invoke("run", spec, "-o", tmp_path / "build")
    assert result.exit_code == 1 and "resume it with --resume" in result.output and len(fake_job) == 1


@pytest.mark.parametrize("change, line", [
    ({"learning_rate": 2.0e-3}, ("training.learning_rate: 0.001 -> 0.002 (cannot change: the optimizer and "
                                 "scheduler state come from the checkpoint)")),
    ({"lora": {"r": 16}}, "lora.r: 8 -> 16 (cannot change: the adapter shapes are in the checkpoint)"),
    ({"lora": {"target_modules": ["q_proj"]}},
     'lora.target_modules: ["q_proj", "k_proj", "v_proj", "o_proj"] -> ["q_proj"]'),
    ({"seed": 8}, "training.seed: 7 -> 8"),
])
def test_resume_refuses_values_that_cannot_change_with_a_diff(tmp_path, fake_job, change, line):
    spec = make_spec(tmp_path)
    assert invoke("run", spec, "-o", tmp_path / "build").exit_code == 0
    checkpoint(tmp_path / "out", 2, 4)
    write_spec(tmp_path, **change)
    result = invoke("run", spec, "-o", tmp_path / "build", "--resume")
    assert result.exit_code == 1, result.output
    assert "cannot resume the run in" in result.output and line in result.output
    assert len(fake_job) == 1


def test_resume_refuses_changed_data(tmp_path, fake_job):
    spec = make_spec(tmp_path)
    assert invoke("run", spec, "-o", tmp_path / "build").exit_code == 0
    checkpoint(tmp_path / "out", 2, 4)
    with open(tmp_path / "data" / "train.jsonl", "a") as fh:
        fh.write('{"instruction": "new", "output": "row"}\n')
    result = invoke("run", spec, "-o", tmp_path / "build", "--resume")
    assert result.exit_code == 1 and "data.sha256:" in result.output


def test_resume_applies_and_reports_values_that_may_change(tmp_path, fake_job):
    spec = make_spec(tmp_path)
    assert invoke("run", spec, "-o", tmp_path / "build").exit_code == 0
    checkpoint(tmp_path / "out", 2, 4)
    write_spec(tmp_path, max_steps=8, logging_steps=2)
    result = invoke("run", spec, "-o", tmp_path / "build", "--resume")
    assert result.exit_code == 0, result.output
    assert "resume: training.max_steps: 4 -> 8 (applied)" in result.output
    assert "resume: training.logging_steps: 1 -> 2 (applied)" in result.output
    assert fake_job[-1]["argv"][-1] == "--resume"
    assert read_marker(tmp_path / "out")["values"]["training.max_steps"] == 8  # the record follows


def test_a_finished_run_is_not_silently_kept_when_max_steps_grows(tmp_path, fake_job):
    spec = make_spec(tmp_path)
    assert invoke("run", spec, "-o", tmp_path / "build").exit_code == 0
    checkpoint(tmp_path / "out", 4, 4)
    write_spec(tmp_path, max_steps=8)
    result = invoke("run", spec, "-o", tmp_path / "build", "--resume")
    assert result.exit_code == 1 and "finished at step 4" in result.output


def test_the_memory_budget_is_not_part_of_the_record(tmp_path, fake_job):
    spec = make_spec(tmp_path)
    assert invoke("run", spec, "-o", tmp_path / "build").exit_code == 0
    checkpoint(tmp_path / "out", 2, 4)
    data = yaml.safe_load(spec.read_text())
    data["hardware"]["host_memory"] = "32GiB"
    spec.write_text(yaml.safe_dump(data))
    result = invoke("run", spec, "-o", tmp_path / "build", "--resume")
    assert result.exit_code == 0 and "resume:" not in result.output
