"""Quantised base (QLoRA): transformers loads the frozen weights through bitsandbytes (4-bit NF4/FP4 or
8-bit), one weight at a time from the memory-mapped shards; peft's prepare_model_for_kbit_training then
makes the unquantised weights (embeddings, head, norms) fp32 and, with checkpointing, lets the frozen
embedding's output carry the gradient into the checkpointed layers (non-reentrant, as Trainer sets it)."""

import os

import torch
from peft import prepare_model_for_kbit_training
from transformers import BitsAndBytesConfig

from .core import STEPS


def quantization_config(quant: dict) -> BitsAndBytesConfig:
    if quant["bits"] == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant["type"],
        bnb_4bit_use_double_quant=quant["double_quant"],
        bnb_4bit_compute_dtype=getattr(torch, quant["compute_dtype"]),
    )


def quantize(cfg: dict, kwargs: dict) -> dict:
    """bitsandbytes needs a device for every layer: the placement's map, else this rank's device."""
    kwargs = {**kwargs, "quantization_config": quantization_config(cfg["model"]["quantization"])}
    if kwargs.get("device_map") is None:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        kwargs["device_map"] = {"": "cpu" if cfg["accelerator"] == "cpu" else local}
    return kwargs


def prepare_kbit(model, cfg: dict):
    return prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=cfg["strategies"]["gradient_checkpointing"],
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )


STEPS.quantize = quantize
STEPS.prepare_base = prepare_kbit
