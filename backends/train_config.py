"""train_config.json: every value the generated train.py reads, with paths made absolute
(relative spec paths resolve against the spec's folder), so the build runs from anywhere."""

from __future__ import annotations

from pathlib import Path

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


def data_config(data, spec_dir: Path) -> dict:
    """The data section: local paths absolute, the column mapping as {format field: file column}."""
    local = lambda path: None if path is None else str(resolve_path(path, spec_dir))  # noqa: E731
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


def build_train_config(ctx) -> dict:
    """train_config.json for a compile context narrowed to its backend."""
    spec, spec_dir, backend = ctx.spec, ctx.spec_dir, ctx.backend
    model, lora, training = spec.model, spec.lora, spec.training
    model_path = resolve_model(model.name, spec_dir)
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
            "target_modules": list(lora.target_modules),
            "layers": list(lora.layers) if lora.layers is not None else None,
        },
        "strategies": {},
        "data": data_config(spec.data, spec_dir),
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
            "output_dir": str(resolve_output_dir(spec, spec_dir)),
            "save_steps": training.save_steps,
            "logging_steps": training.logging_steps,
            "eval_steps": training.eval_steps,
        },
    }
    for strategy in STRATEGIES:
        for section, values in strategy.train_config(spec).items():
            config[section].update(values)
    return config
