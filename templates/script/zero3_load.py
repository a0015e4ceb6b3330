"""ZeRO-3 partitioned load: each rank keeps only its shard of every base weight from the start."""

import json

from transformers import AutoModelForCausalLM

from .core import STEPS, JobError, rank


def load_partitioned(cfg: dict, kwargs: dict):
    """The DeepSpeed config already exists (TrainingArguments made it): transformers builds the model
    inside zero.Init, a collective in which every rank keeps only its shard, so all load together.
    zero.Init reads the world size from deepspeed.comm, which wraps the process group Trainer made."""
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo" if cfg["accelerator"] == "cpu" else "nccl")
    model = AutoModelForCausalLM.from_pretrained(cfg["model"]["path"], **kwargs)
    report_partition(model)
    return model


def report_partition(model) -> None:
    """Prove the load was partitioned: each rank's share of every base weight, on every rank."""
    frozen = list(model.parameters())  # before peft: all of them become the frozen base
    if not all(hasattr(p, "ds_numel") for p in frozen):
        raise JobError("the model was not partitioned at load (zero.Init inactive); "
                       "refusing to load a full copy per rank")
    total, local = sum(p.ds_numel for p in frozen), sum(p.ds_tensor.numel() for p in frozen)
    shares = [p.ds_tensor.numel() / p.ds_numel for p in frozen if p.ds_numel]
    report = {"rank": rank(), "frozen_numel": total, "local_numel": local,
              "min_share": min(shares), "max_share": max(shares)}
    print("zero3 partition: " + json.dumps(report, sort_keys=True), flush=True)


STEPS.load_model = load_partitioned
