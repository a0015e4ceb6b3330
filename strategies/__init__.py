"""Memory strategies: one module per strategy, each holding one object (see base.py for the contract).
Adding a strategy is adding its module and listing it here; its keys in the spec (in the section it
names), the planner's step shape and suggestions, the generated script's parts and train_config.json
derive from this list."""

from __future__ import annotations

from typing import Any

from .activation_compression import STRATEGY as ACTIVATION_COMPRESSION
from .activation_offload import STRATEGY as ACTIVATION_OFFLOAD
from .adapter_dtype import STRATEGY as ADAPTER_DTYPE
from .adapter_method import STRATEGY as ADAPTER_METHOD
from .attention import STRATEGY as ATTENTION
from .base import Change, Strategy
from .checkpointing import STRATEGY as GRADIENT_CHECKPOINTING
from .loss import STRATEGY as LOSS
from .low_memory_load import STRATEGY as LOW_MEMORY_LOAD
from .max_seq_length import STRATEGY as MAX_SEQ_LENGTH
from .mixed_precision import STRATEGY as MIXED_PRECISION
from .offload import STRATEGY as OFFLOAD
from .optimizer import STRATEGY as OPTIMIZER
from .quantization import STRATEGY as QUANTIZATION

# In the order the spec reference lists them and the planner suggests their fixes.
STRATEGIES: tuple[Strategy, ...] = (
    GRADIENT_CHECKPOINTING, MIXED_PRECISION, LOW_MEMORY_LOAD, MAX_SEQ_LENGTH, ATTENTION, OFFLOAD,
    OPTIMIZER, QUANTIZATION, ADAPTER_METHOD, ADAPTER_DTYPE, LOSS, ACTIVATION_OFFLOAD, ACTIVATION_COMPRESSION,
)
SECTIONS = ("model", "lora", "training", "strategies")


def section_fields(section: str) -> dict[str, tuple[Any, Any]]:
    """The keys the strategies add to one spec section, for the schema module that builds it."""
    if section not in SECTIONS:
        raise ValueError(f"no spec section {section!r} takes strategy keys; one of {SECTIONS}")
    fields: dict[str, tuple[Any, Any]] = {}
    for strategy in STRATEGIES:
        if strategy.section == section:
            for name, field in strategy.fields().items():
                if name in fields:
                    raise ValueError(f"two strategies define {section}.{name}")
                fields[name] = field
    return fields


def strategy_parts() -> list[str]:
    """Every script part a strategy may need, in STRATEGIES order (a spec turns them on in train_config)."""
    parts: list[str] = []
    for strategy in STRATEGIES:
        parts += [p for p in strategy.script_parts if p not in parts]
    return parts


__all__ = ["SECTIONS", "STRATEGIES", "Change", "Strategy", "section_fields", "strategy_parts"]
