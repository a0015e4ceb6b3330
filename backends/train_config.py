"""train_config.json: every value the generated train.py reads.

Paths are portable: when the build directory and a path both lie inside the spec's folder, the path is
written relative to the build directory ("./x" or "../x"; train.py resolves it against its config's
folder), so that folder can be copied or moved as a whole, or mounted elsewhere on each node. Other paths
are absolute. At launch QCOMPILE_MODEL_PATH, QCOMPILE_DATA_PATH and QCOMPILE_OUTPUT_DIR override them."""

from __future__ import annotations

import os
from pathlib import Path

from qcompile.compiler.planner.memory import resolve_targets
from qcompile.schemas.data import NAMED_TEMPLATES
from qcompile.strategies import STRATEGIES

from .base import resolve_output_dir, resolve_path
from .zero_common import MAX_GRAD_NORM


def resolve_model(name: str, spec_dir: Path) -> str:
    """A local directory (relative to the spec, or absolute) becomes an absolute path; a hub id stays."""
    candidate = resolve_path(name, spec_dir)
    if candidate.exists() or name.startswith((".", "/", "~")):
        return str(candidate)
    return name


def portable(path: str, spec_dir: Path, build_dir: Path | None) -> str:
    """`path` (absolute) relative to the build directory when both lie inside the spec's folder."""
    if build_dir is None or not os.path.isabs(path):
        return path
    root = Path(spec_dir).resolve()
    build = Path(os.path.abspath(build_dir))
    try:
        Path(path).relative_to(root)
        build.relative_to(root)
    except ValueError:
        return path
    relative = os.path.relpath(path, build)
    return relative if relative.startswith("..") else "./" + relative


def data_config(data, spec_dir: Path, build_dir: Path | None = None) -> dict:
    """The data section: local paths as `portable` writes them, the column mapping as {format field: file
    column}."""

    def local(path):
        return None if path is None else portable(str(resolve_path(path, spec_dir)), spec_dir, build_dir)

    chat_template = data.chat_template
    if chat_template is not None and chat_template not in NAMED_TEMPLATES:
        chat_template = local(chat_template)
    return {
        "path": local(data.path),
        "hub_id": data.hub_id,
        "split": data.split,
        "subset": data.subset,
        "revision": data.revision,
        "format": data.format,
        "columns": data.columns.mapping() if data.columns is not None else {},
        "eval_fraction": data.eval_fraction,
        "eval_path": local(data.eval_path),
        "has_eval": data.has_eval,
        "packing": data.packing,
        "chat_template": chat_template,
    }


def build_train_config(ctx, build_dir: str | Path | None = None) -> dict:
    """train_config.json for a compile context narrowed to its backend, to be written into `build_dir`
    (None: every path absolute)."""
    spec, spec_dir, backend = ctx.spec, ctx.spec_dir, ctx.backend
    model, lora, training = spec.model, spec.lora, spec.training
    build = Path(build_dir) if build_dir is not None else None
    model_path = portable(resolve_model(model.name, spec_dir), spec_dir, build)
    config = {
        "accelerator": spec.hardware.accelerator,
        "world_size": spec.hardware.nodes * backend.processes(spec),
        "backend": {"kind": backend.kind, **backend.train_config(ctx)},
        "model": {
            "path": model_path,
            "tokenizer": model_path,
            "revision": model.revision,
            "dtype": model.dtype,
            "trust_remote_code": model.trust_remote_code,
        },
        "lora": {
            "r": lora.r,
            "alpha": lora.alpha,
            "dropout": lora.dropout,
            "target_modules": resolve_targets(lora.target_modules, ctx.arch),
            "layers": list(lora.layers) if lora.layers is not None else None,
        },
        "strategies": {},
        "data": data_config(spec.data, spec_dir, build),
        "training": {
            "micro_batch_size": training.micro_batch_size,
            "gradient_accumulation_steps": training.gradient_accumulation_steps,
            "epochs": training.epochs,
            "max_steps": training.max_steps,
            "learning_rate": training.learning_rate,
            "weight_decay": training.weight_decay,
            "warmup_steps": training.warmup_steps,
            "lr_scheduler": training.lr_scheduler,
            "max_grad_norm": MAX_GRAD_NORM,
            "seed": training.seed,
            "output_dir": portable(str(resolve_output_dir(spec, spec_dir)), spec_dir, build),
            "save_steps": training.save_steps,
            "logging_steps": training.logging_steps,
            "eval_steps": training.eval_steps,
            "report_to": list(training.report_to),
            "run_name": training.run_name,
        },
    }
    folder = config["backend"].get("offload_folder")
    if isinstance(folder, str):
        config["backend"]["offload_folder"] = portable(folder, spec_dir, build)
    for strategy in STRATEGIES:
        for section, values in strategy.train_config(spec).items():
            config[section].update(values)
    return config
