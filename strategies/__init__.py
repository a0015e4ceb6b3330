"""Memory strategies: one module per strategy, each holding one object (see base.py for the contract).
Adding a strategy is adding its module and listing it here; the spec's `strategies:` section, the
planner's step shape and suggestions, and train_config.json derive from this list."""

from __future__ import annotations

from .attention import STRATEGY as ATTENTION
from .base import Change, Strategy
from .checkpointing import STRATEGY as GRADIENT_CHECKPOINTING
from .low_memory_load import STRATEGY as LOW_MEMORY_LOAD
from .max_seq_length import STRATEGY as MAX_SEQ_LENGTH
from .mixed_precision import STRATEGY as MIXED_PRECISION
from .offload import STRATEGY as OFFLOAD

# In the order the spec reference lists them and the planner suggests their fixes.
STRATEGIES: tuple[Strategy, ...] = (
    GRADIENT_CHECKPOINTING, MIXED_PRECISION, LOW_MEMORY_LOAD, MAX_SEQ_LENGTH, ATTENTION, OFFLOAD,
)

__all__ = ["STRATEGIES", "Change", "Strategy"]
