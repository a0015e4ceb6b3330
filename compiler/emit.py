"""emit: turn a validated spec into the build directory's files (ds_config.json, accelerate_config.yaml,
train.py, train_config.json, launch.sh, memory_plan.*, manifest.json, and for several nodes slurm.sbatch,
hostfile and launch_deepspeed.sh), deterministically."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from qcompile import __version__
from qcompile.backends.base import resolve_output_dir
from qcompile.backends.train_config import build_train_config
from qcompile.strategies import STRATEGIES

from .context import CompileContext
from .launch import shell_command
from .load import LoadedSpec, load_spec
from .output import GENERATOR, sha256, write_build_dir
from .planner.picture import plan_svg
from .render import render, render_train_script

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def dump_json(data: object) -> bytes:
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def dump_yaml(data: object) -> bytes:
    return yaml.safe_dump(data, sort_keys=True, default_flow_style=False, allow_unicode=True).encode()


@dataclass(frozen=True)
class Build:
    backend: str
    files: dict[str, bytes]
    manifest: bytes
    argv: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class EmitResult:
    build_dir: Path
    build: Build
    loaded: LoadedSpec


def _memory_plan(ctx: CompileContext) -> dict[str, bytes]:
    plan = ctx.plan
    if plan is None:
        return {}
    return {"memory_plan.json": dump_json(plan.to_json()), "memory_plan.md": plan.to_markdown().encode(),
            "memory_plan.svg": plan_svg(plan).encode()}


def script_parts(spec, backend) -> list[str]:
    """The backend's parts, then those of the strategies the spec turns on, in STRATEGIES order."""
    names = list(backend.script_parts)
    for strategy in STRATEGIES:
        names += [p for p in strategy.parts(spec) if p not in names]
    return names


def rendezvous_id(loaded: LoadedSpec) -> str:
    """Derived from the run (the spec and where it trains), so two jobs sharing a rendezvous host and port
    do not join each other; every node of one job computes the same."""
    output_dir = str(resolve_output_dir(loaded.context.spec, loaded.spec_dir))
    return "qc-" + hashlib.sha256(sha256(loaded.source).encode() + b"\0" + output_dir.encode()).hexdigest()[:16]


def _node_files(loaded: LoadedSpec, env: dict[str, str]) -> dict[str, bytes]:
    """slurm.sbatch, and the DeepSpeed launcher's hostfile and command, for a job on several nodes."""
    spec, backend = loaded.context.spec, loaded.context.backend
    hw = spec.hardware
    common = {"qcompile_version": __version__, "backend": backend.kind, "nodes": hw.nodes}
    files = {"slurm.sbatch": render("slurm.sbatch.j2", {
        **common,
        "job_name": re.sub(r"[^A-Za-z0-9_.-]", "-", loaded.path.stem)[:64] or "qcompile",
        "gpus_per_node": hw.devices_per_node if hw.accelerator == "cuda" else 0,
        "time_limit": hw.time_limit,
    }).encode()}
    argv = backend.hostfile_argv(spec)
    if argv is not None:
        files["hostfile"] = render("hostfile.j2", {**common, "slots": backend.processes(spec),
                                                    "port": hw.rendezvous.port}).encode()
        files["launch_deepspeed.sh"] = render("launch_deepspeed.sh.j2", {
            **common, "port": hw.rendezvous.port, "command": shell_command(argv),
            "env": [[k, shlex.quote(v)] for k, v in sorted(env.items())],
            "env_names": " ".join(f"{k}={v}" for k, v in sorted(env.items())),
        }).encode()
    return files


def compile_spec(loaded: LoadedSpec, build_dir: str | Path | None = None) -> Build:
    """Every artifact as bytes, built from dicts and sandboxed templates; nothing is written here.
    `build_dir` is where they will be written: train_config.json names paths relative to it when the build
    and those paths lie in the spec's folder, so that folder can move as a whole."""
    ctx = loaded.context
    spec, backend = ctx.spec, ctx.backend
    argv = list(backend.launch_argv(spec))
    env = dict(backend.launch_env(spec))
    if not all(ENV_NAME.match(key) for key in env):  # launch.sh writes the names unquoted
        raise ValueError(f"backend {backend.kind} asks for an environment variable that is not a name: {sorted(env)}")
    files: dict[str, bytes] = {}
    ds_config = backend.ds_config(ctx)
    if ds_config is not None:
        files["ds_config.json"] = dump_json(ds_config)
    files["accelerate_config.yaml"] = dump_yaml(backend.accelerate_config(spec))
    files["train_config.json"] = dump_json(build_train_config(ctx, build_dir))
    files["train.py"] = render_train_script(__version__, backend.kind, script_parts(spec, backend)).encode()
    files["launch.sh"] = render("launch.sh.j2", {
        "backend": backend.kind,
        "qcompile_version": __version__,
        "env": [[k, shlex.quote(v)] for k, v in sorted(env.items())],
        "command": shell_command(argv),
        "nodes": spec.hardware.nodes,
        "rendezvous": spec.hardware.rendezvous.model_dump(mode="json"),
        "run_id": rendezvous_id(loaded),
    }).encode()
    if spec.hardware.nodes > 1:
        files.update(_node_files(loaded, env))
    files.update(_memory_plan(ctx))
    manifest = dump_json({
        "generator": GENERATOR,
        "qcompile_version": __version__,
        "backend": backend.kind,
        "spec": {"file": loaded.path.name, "sha256": sha256(loaded.source)},
        "launch": {"argv": argv, "env": env, "cwd": "."},
        "files": {name: sha256(data) for name, data in sorted(files.items())},
    })
    return Build(backend.kind, files, manifest, argv, env)


def default_build_dir(spec_path: Path) -> Path:
    return Path("build") / spec_path.stem


def emit(spec_path: str | Path, out_dir: str | Path | None = None, force: bool = False,
         memory_check: bool = True) -> EmitResult:
    return emit_loaded(load_spec(spec_path, memory_check=memory_check), out_dir, force)


def emit_loaded(loaded: LoadedSpec, out_dir: str | Path | None = None, force: bool = False) -> EmitResult:
    """Compile a loaded spec and write its build directory (-o DIR, else build/<spec name>)."""
    build_dir = Path(out_dir) if out_dir is not None else default_build_dir(loaded.path)
    build = compile_spec(loaded, build_dir)
    write_build_dir(build_dir, build.files, build.manifest, force)
    return EmitResult(build_dir, build, loaded)
