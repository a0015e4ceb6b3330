"""emit: turn a validated spec into the build directory's files (ds_config.json, accelerate_config.yaml,
train.py, train_config.json, launch.sh, memory_plan.*, manifest.json), deterministically."""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from qcompile import __version__
from qcompile.schemas import Spec

from .launch import shell_command
from .load import LoadedSpec, load_spec
from .output import GENERATOR, write_build_dir
from .render import render, render_train_script


def dump_json(data: object) -> bytes:
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def dump_yaml(data: object) -> bytes:
    return yaml.safe_dump(data, sort_keys=True, default_flow_style=False, allow_unicode=True).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


def resolve_backend(loaded: LoadedSpec) -> tuple[Spec, object]:
    """The spec with a concrete backend (`auto` asks the planner) and that backend's object."""
    from qcompile.backends.registry import get_backend

    from .checks import resolve_auto

    spec = loaded.spec
    if spec.backend.kind == "auto":
        kind, problems = resolve_auto(spec, loaded.spec_dir)
        if kind is None:
            raise loaded.error(problems)
        spec = Spec.model_validate({**spec.model_dump(), "backend": {"kind": kind}})
    return spec, get_backend(spec.backend.kind)


def _memory_plan(spec: Spec, spec_dir: Path) -> dict[str, bytes]:
    from . import planner

    try:
        arch = planner.resolve_architecture(spec, spec_dir)
    except planner.ArchitectureUnknown:
        return {}
    plan = planner.plan(spec, arch, spec.backend.kind)
    return {"memory_plan.json": dump_json(plan.to_json()), "memory_plan.md": plan.to_markdown().encode()}


def compile_spec(loaded: LoadedSpec) -> Build:
    """Every artifact as bytes, built from dicts and sandboxed templates; nothing is written here."""
    from qcompile.backends.train_config import build_train_config

    spec, backend = resolve_backend(loaded)
    argv = list(backend.launch_argv(spec))
    env = dict(getattr(backend, "launch_env", lambda s: {})(spec))
    files: dict[str, bytes] = {}
    ds_config = backend.ds_config(spec, loaded.spec_dir)
    if ds_config is not None:
        files["ds_config.json"] = dump_json(ds_config)
    files["accelerate_config.yaml"] = dump_yaml(backend.accelerate_config(spec))
    files["train_config.json"] = dump_json(build_train_config(spec, loaded.spec_dir, backend))
    files["train.py"] = render_train_script(__version__, backend.kind, list(backend.script_parts)).encode()
    files["launch.sh"] = render("launch.sh.j2", {
        "backend": backend.kind,
        "qcompile_version": __version__,
        "env_lines": [f"{k}={shlex.quote(v)}" for k, v in sorted(env.items())],
        "command": shell_command(argv),
    }).encode()
    files.update(_memory_plan(spec, loaded.spec_dir))
    manifest = dump_json({
        "generator": GENERATOR,
        "qcompile_version": __version__,
        "backend": backend.kind,
        "spec": {"file": loaded.path.name, "sha256": _sha256(loaded.source)},
        "launch": {"argv": argv, "env": env, "cwd": "."},
        "files": {name: _sha256(data) for name, data in sorted(files.items())},
    })
    return Build(backend.kind, files, manifest, argv, env)


def default_build_dir(spec_path: Path) -> Path:
    return Path("build") / spec_path.stem


def emit(spec_path: str | Path, out_dir: str | Path | None = None, force: bool = False,
         memory_check: bool = True) -> EmitResult:
    loaded = load_spec(spec_path, memory_check=memory_check)
    build = compile_spec(loaded)
    build_dir = Path(out_dir) if out_dir is not None else default_build_dir(loaded.path)
    write_build_dir(build_dir, build.files, build.manifest, force)
    return EmitResult(build_dir, build, loaded)
