"""Every rank loads the whole base model. transformers 5 builds the skeleton on the meta device and
fills it from memory-mapped safetensors; low_cpu_mem_usage additionally lets the ranks of a node load
one after another, so a node never holds more than one half-built copy."""

import os

import torch
from transformers import AutoModelForCausalLM

from .core import STEPS


def load_in_turns(cfg: dict, kwargs: dict):
    model_cfg = cfg["model"]
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    staggered = model_cfg["low_cpu_mem_usage"] and distributed
    local_rank, local_size = int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    model = None
    for turn in range(local_size if staggered else 1):
        if turn == local_rank or not staggered:
            model = AutoModelForCausalLM.from_pretrained(model_cfg["path"], **kwargs)
        if staggered:
            torch.distributed.barrier()
    return model


STEPS.load_model = load_in_turns
