"""emit: turn a validated spec into the build directory's files (ds_config.json, accelerate_config.yaml,
train.py, train_config.json, launch.sh, memory_plan.*, manifest.json), deterministically."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from qcompile import __version__
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


def compile_spec(loaded: LoadedSpec) -> Build:
    """Every artifact as bytes, built from dicts and sandboxed templates; nothing is written here."""
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
    files["train_config.json"] = dump_json(build_train_config(ctx))
    files["train.py"] = render_train_script(__version__, backend.kind, script_parts(spec, backend)).encode()
    files["launch.sh"] = render("launch.sh.j2", {
        "backend": backend.kind,
        "qcompile_version": __version__,
        "env": [[k, shlex.quote(v)] for k, v in sorted(env.items())],
        "command": shell_command(argv),
    }).encode()
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
    build = compile_spec(loaded)
    build_dir = Path(out_dir) if out_dir is not None else default_build_dir(loaded.path)
    write_build_dir(build_dir, build.files, build.manifest, force)
    return EmitResult(build_dir, build, loaded)
