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
from qcompile.schemas import Spec

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
    backend = get_backend(spec.backend.kind)
    build_dir.mkdir(parents=True, exist_ok=True)
    dump = lambda data: json.dumps(data, sort_keys=True, indent=2) + "\n"  # noqa: E731
    if backend.ds_config(spec) is not None:
        (build_dir / "ds_config.json").write_text(dump(backend.ds_config(spec)))
    (build_dir / "accelerate_config.yaml").write_text(yaml.safe_dump(backend.accelerate_config(spec), sort_keys=True))
    (build_dir / "train_config.json").write_text(dump(build_train_config(spec, spec_dir, backend)))
    (build_dir / "train.py").write_text(render_train_py(spec.backend.kind))
    return build_dir
