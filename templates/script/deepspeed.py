"""DeepSpeed ZeRO as HF Trainer's engine, configured by the ds_config.json next to this script."""

import json
from pathlib import Path

from transformers import Trainer

from .core import STEPS, JobError


def deepspeed_arguments(cfg: dict, config_dir: Path) -> dict:
    return {
        "deepspeed": str(config_dir / cfg["backend"]["ds_config"]),
        "ddp_backend": "gloo" if cfg["accelerator"] == "cpu" else None,
    }


def require_deepspeed(trainer: Trainer) -> None:
    """Trainer silently trains with plain DDP when accelerate chose another engine."""
    if not trainer.is_deepspeed_enabled:
        config = json.loads(Path(trainer.args.deepspeed).read_text(encoding="utf-8"))
        stage = config["zero_optimization"]["stage"]
        raise JobError(f"DeepSpeed is not active (is ACCELERATE_USE_CPU set?); refusing to train without ZeRO-{stage}")


STEPS.engine_arguments = deepspeed_arguments
STEPS.check_trainer = require_deepspeed
