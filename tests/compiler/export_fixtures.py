"""Adapters for the export tests, built directly with peft (a real run would take a minute each): small
random updates of the size training gives, one per method export supports."""

from __future__ import annotations

import shutil
from pathlib import Path

TARGETS = ["q_proj", "v_proj", "down_proj"]


def sharded_copy(model_dir: Path, dest: Path, shard_size: str = "200KB") -> Path:
    """model_dir re-saved in several safetensors shards with an index, tokenizer copied."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.save_pretrained(dest, max_shard_size=shard_size, safe_serialization=True)
    for item in Path(model_dir).iterdir():
        if item.name.startswith(("tokenizer", "chat_template")):
            shutil.copyfile(item, dest / item.name)
    return dest


def make_adapter(base: Path, dest: Path, method: str, targets=TARGETS, quantized: bool = False) -> Path:
    """A saved adapter of `method` (lora, rslora, dora, adalora) on `base`, with non-zero updates; AdaLoRA
    is saved pruned to rank 4 of 8 through its rank pattern, as a finished AdaLoRA run leaves it."""
    import torch
    from peft import AdaLoraConfig, LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs = {"dtype": torch.float32}
    if quantized:
        kwargs.update(quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32),
                      device_map={"": "cpu"})
    model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    if method == "adalora":
        config = AdaLoraConfig(init_r=8, target_r=4, lora_alpha=16, target_modules=targets, total_step=10)
    else:
        config = LoraConfig(r=8, lora_alpha=16, target_modules=targets, use_dora=method == "dora",
                            use_rslora=method == "rslora")
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(3)
    pattern = {}
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name or "lora_E" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
            elif "lora_magnitude_vector" in name:
                parameter.mul_(1 + 0.05 * torch.randn(parameter.shape, generator=generator))
        for name, module in peft_model.named_modules():
            if method == "adalora" and hasattr(module, "lora_E") and "default" in module.lora_E:
                pattern[f"{name.removeprefix('base_model.model.')}.lora_E"] = [i % 2 == 0 for i in range(8)]
    if pattern:
        peft_model.peft_config["default"].rank_pattern = pattern
    peft_model.save_pretrained(dest)
    return Path(dest)
