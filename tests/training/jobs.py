"""Build a job folder the way `qcompile SPEC --emit` does, for tests that launch real training."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from qcompile import __version__
from qcompile.backends.registry import get_backend
from qcompile.backends.train_config import build_train_config
from qcompile.schemas.spec import Spec
from tests.helpers import narrowed

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def render_train_py(kind: str) -> str:
    backend = get_backend(kind)
    env = ImmutableSandboxedEnvironment(loader=jinja2.FileSystemLoader(str(REPO / "templates")),
                                        undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                        trim_blocks=True, lstrip_blocks=True)
    return env.get_template("train.py.j2").render(backend=kind, uses_deepspeed=backend.uses_deepspeed,
                                                  qcompile_version=__version__)


def spec_from(path: Path, **overrides) -> Spec:
    """The spec at path with section overrides, e.g. training={"max_steps": 4}."""
    data = yaml.safe_load(Path(path).read_text())
    for section, values in overrides.items():
        data[section] = {**data[section], **values} if isinstance(values, dict) else values
    return Spec.model_validate(data)


def build_job(spec: Spec, spec_dir: Path, build_dir: Path) -> Path:
    ctx = narrowed(spec, spec_dir)
    backend = ctx.backend
    build_dir.mkdir(parents=True, exist_ok=True)
    dump = lambda data: json.dumps(data, sort_keys=True, indent=2) + "\n"  # noqa: E731
    ds_config = backend.ds_config(ctx)
    if ds_config is not None:
        (build_dir / "ds_config.json").write_text(dump(ds_config))
    (build_dir / "accelerate_config.yaml").write_text(yaml.safe_dump(backend.accelerate_config(spec), sort_keys=True))
    (build_dir / "train_config.json").write_text(dump(build_train_config(ctx)))
    (build_dir / "train.py").write_text(render_train_py(spec.backend.kind))
    return build_dir


def launch(spec: Spec, build_dir: Path, resume: bool = False, echo=lambda line: None):
    """Run the job as `qcompile run` does (same argv and environment), without the CLI."""
    from qcompile.compiler.launch import job_env, resolve_argv, run_job

    backend = get_backend(spec.backend.kind)
    env = job_env(backend.launch_env(spec))
    env["TORCH_EXTENSIONS_DIR"] = str(REPO / ".cache" / "torch_extensions")
    return run_job(build_dir, resolve_argv(backend.launch_argv(spec), resume), env, echo=echo)


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


def load_script(kind: str, tmp_path: Path):
    """Import the rendered train.py as a module, to test its functions in-process."""
    import importlib.util

    path = tmp_path / f"train_{kind.replace('-', '_')}.py"
    path.write_text(render_train_py(kind))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
