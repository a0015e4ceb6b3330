"""AdaLoRA: adapters start at rank r and are pruned toward an average of target_r. Its schedule needs the
run's total steps (known once the data is read); its rank allocator runs after every optimizer step,
before the gradients are cleared, and its importance scores and rank pattern are saved with each
checkpoint so that a resumed run prunes as the uninterrupted one would."""

import os
from pathlib import Path

import torch
from peft import AdaLoraConfig
from transformers import TrainerCallback

from .core import STEPS, rank

ALLOCATOR_STATE = "adalora_state.pt"


def adalora_schedule(cfg: dict) -> dict:
    """tinit/tfinal/deltaT: the spec's, else 10% warm-up at full rank, 20% at the final rank and ten
    reallocations over the pruning phase (at least one step apart)."""
    total, knobs = cfg["training"]["total_steps"], cfg["lora"]["adalora"]
    tinit = knobs["tinit"] if knobs["tinit"] is not None else total // 10
    tfinal = knobs["tfinal"] if knobs["tfinal"] is not None else total // 5
    if total - tinit - tfinal < 1:
        tinit, tfinal = 0, 0
    delta = knobs["delta_t"] if knobs["delta_t"] is not None else max((total - tinit - tfinal) // 10, 1)
    return {"tinit": tinit, "tfinal": tfinal, "deltaT": delta, "total_step": total}


def adalora_config(cfg: dict) -> AdaLoraConfig:
    lora = cfg["lora"]
    return AdaLoraConfig(
        init_r=lora["r"],
        target_r=lora["target_r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"],
        layers_to_transform=lora["layers"],
        orth_reg_weight=lora["adalora"]["orth_reg_weight"],
        task_type="CAUSAL_LM",
        **adalora_schedule(cfg),
    )


class AllocateRanks(TrainerCallback):
    """update_and_allocate after each optimizer step (Trainer clears the gradients after this hook).
    Between steps the rank pattern is kept here, not in peft's config: peft would otherwise save each
    checkpoint's adapters already cut to it, which a resumed full-rank model cannot load. The final
    adapter is saved with the pattern (pruned shapes and rank_pattern, a standard AdaLoRA folder)."""

    def __init__(self):
        self.pattern = None

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        config = tuner(model).peft_config["default"]
        config.rank_pattern = self.pattern
        tuner(model).update_and_allocate(state.global_step)
        self.pattern, config.rank_pattern = config.rank_pattern, None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        tuner(model).peft_config["default"].rank_pattern = self.pattern

    def on_save(self, args, state, control, model=None, **kwargs):
        if rank() != 0:
            return
        allocator = tuner(model).rankallocator
        target = Path(args.output_dir) / f"checkpoint-{state.global_step}" / ALLOCATOR_STATE
        temporary = target.with_name(target.name + ".tmp")
        torch.save({"ipt": allocator.ipt, "exp_avg_ipt": allocator.exp_avg_ipt, "exp_avg_unc": allocator.exp_avg_unc,
                    "rank_pattern": self.pattern}, temporary)
        os.replace(temporary, target)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        saved = Path(args.output_dir) / f"checkpoint-{state.global_step}" / ALLOCATOR_STATE
        if state.global_step == 0 or not saved.exists():
            return
        data = torch.load(saved, map_location="cpu", weights_only=False)
        allocator = tuner(model).rankallocator
        allocator.ipt, allocator.exp_avg_ipt = data["ipt"], data["exp_avg_ipt"]
        allocator.exp_avg_unc = data["exp_avg_unc"]
        self.pattern = data["rank_pattern"]


def tuner(model):
    """The AdaLoraModel inside the PeftModel (or inside an engine's wrapper)."""
    model = getattr(model, "module", model)
    return model.base_model


STEPS.lora_config = adalora_config
STEPS.callbacks.append(AllocateRanks())
