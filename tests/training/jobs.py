"""Compile and start jobs exactly as `qcompile run` does, for the tests that launch real training: write a
spec file, compile it with `emit` (load_spec, compile_spec, write_build_dir) and run the emitted launch.sh."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from qcompile.compiler.emit import EmitResult, emit
from qcompile.compiler.launch import JobResult, job_env, launch_script_argv, run_job

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def write_spec(folder: Path, example: str, **overrides) -> Path:
    """examples/<example> with section overrides (e.g. training={"max_steps": 4}) as folder/spec.yaml; the
    example's model and data paths are made absolute so the spec works from its new folder."""
    data = yaml.safe_load((EXAMPLES / example).read_text())
    data["model"]["name"] = str(EXAMPLES / data["model"]["name"])
    data["data"]["path"] = str(EXAMPLES / data["data"]["path"])
    for section, values in overrides.items():
        data[section] = {**data[section], **values} if isinstance(values, dict) else values
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def compile_job(folder: Path, example: str, **overrides) -> EmitResult:
    """The build directory folder/build, written by the same code as `qcompile run`."""
    return emit(write_spec(folder, example, **overrides), folder / "build")


def start(job: EmitResult, resume: bool = False) -> subprocess.Popen:
    """launch.sh in its own session with the environment `qcompile run` gives it, output discarded."""
    return subprocess.Popen(launch_script_argv(resume), cwd=job.build_dir, env=job_env(job.build.env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def launch(job: EmitResult, resume: bool = False, echo=lambda line: None) -> JobResult:
    """Run launch.sh as `qcompile run` does, streaming its lines to echo."""
    return run_job(job.build_dir, launch_script_argv(resume), job_env(job.build.env), echo=echo)


def metrics(output_dir: Path) -> list[dict]:
    lines = (Path(output_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def adapter(output_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(output_dir) / "adapter_model.safetensors"))


def tiny_model(tmp_root: Path) -> Path:
    """The example model, created once per session where the examples expect it."""
    target = EXAMPLES / "models" / "tiny-qwen2"
    if not (target / "model.safetensors").exists():
        import importlib.util

        spec = importlib.util.spec_from_file_location("make_tiny_model", EXAMPLES / "make_tiny_model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.make_model(target)
    return target
