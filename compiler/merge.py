"""The torch side of `qcompile export`: fold a LoRA-family adapter into the base weights.

Two ways, same result. `merge_in_memory` is peft's own `merge_and_unload` on the whole model.
`merge_by_shard` reads one base safetensors shard at a time, applies to each adapted weight exactly the
arithmetic peft's merge does (lora/rslora: W += scale * B @ A; dora: the column-norm rescale; adalora:
B @ (A * E) * alpha / (ranknum + 1e-5)), and writes that shard before reading the next, so host memory is
bounded by the largest shard, not the model. Imported only by the export command (torch, peft, safetensors).
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

ADAPTER_PREFIX = "base_model.model."
INDEX = "model.safetensors.index.json"
CONFIG_FILES = ("config.json", "generation_config.json")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---------------------------------------------------------------- the adapter, per module


def _adapter_tensors(adapter_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """module path (as in the base checkpoint, without `.weight`) -> {lora_A, lora_B, lora_E, magnitude}."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in load_file(str(adapter_dir / "adapter_model.safetensors")).items():
        name = key.removeprefix(ADAPTER_PREFIX)
        for part in ("lora_A", "lora_B", "lora_E", "lora_magnitude_vector"):
            marker = f".{part}"
            if marker in name:
                module = name[: name.index(marker)]
                modules.setdefault(module, {})[part] = tensor.float()  # as peft loads it: fp32 adapters
                break
    return modules


def _lora_scale(config: dict) -> float:
    """peft's LoraLayer.scaling: alpha / r, or alpha / sqrt(r) with use_rslora."""
    r, alpha = config["r"], config["lora_alpha"]
    return alpha / r**0.5 if config.get("use_rslora") else alpha / r


def delta_function(config: dict, parts: dict[str, torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """weight -> merged weight, in the weight's dtype, computed as peft's merge computes it."""
    if config["peft_type"] == "ADALORA":
        alpha = config["lora_alpha"]
        scaling = alpha if alpha > 0 else float(config["init_r"])
        ranknum = torch.tensor([float(config["init_r"])])  # what a loaded (and resized) AdaLoRA layer holds

        def adalora(weight: torch.Tensor) -> torch.Tensor:
            delta = parts["lora_B"] @ (parts["lora_A"] * parts["lora_E"]) * scaling / (ranknum + 1e-5)
            return weight.add_(delta)

        return adalora
    scale = _lora_scale(config)
    if config.get("use_dora"):
        def dora(weight: torch.Tensor) -> torch.Tensor:
            delta = parts["lora_B"] @ parts["lora_A"] * scale
            combined = weight + delta
            norm = torch.linalg.norm(combined, dim=1).to(combined.dtype)
            factor = (parts["lora_magnitude_vector"] / norm).view(-1, 1)
            return (factor * (weight + delta)).to(weight.dtype)

        return dora

    def lora(weight: torch.Tensor) -> torch.Tensor:
        return weight.add_(parts["lora_B"] @ parts["lora_A"] * scale)

    return lora


# ---------------------------------------------------------------- shard by shard


def _shards(base_dir: Path) -> list[str]:
    index = base_dir / INDEX
    if index.exists():
        return sorted(set(json.loads(index.read_text())["weight_map"].values()))
    return ["model.safetensors"]


def merge_by_shard(base_dir: Path, adapter_dir: Path, out_dir: Path, dtype: str,
                   progress: Callable[[str], None] = lambda line: None) -> list[str]:
    """Write the merged weights of every base shard to out_dir (same shard names) and return the names."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    modules = _adapter_tensors(adapter_dir)
    pending = {f"{module}.weight": delta_function(config, parts) for module, parts in modules.items()}
    target = DTYPES[dtype]
    names = _shards(base_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weight_map, total = {}, 0
    for number, name in enumerate(names, 1):
        merged = {}
        with safe_open(str(base_dir / name), framework="pt") as shard:
            for key in shard.keys():
                tensor = shard.get_tensor(key)
                if tensor.is_floating_point():
                    tensor = tensor.to(target)
                if key in pending:
                    tensor = pending.pop(key)(tensor)
                merged[key] = tensor.contiguous()
                weight_map[key] = name
                total += tensor.numel() * tensor.element_size()
        save_file(merged, str(out_dir / name), metadata={"format": "pt"})
        del merged
        progress(f"shard {number}/{len(names)}: {name}")
    if pending:
        missing = sorted(pending)
        raise KeyError(f"the adapter targets {missing[0]} (and {len(missing) - 1} more), which no base shard holds")
    if len(names) > 1 or (base_dir / INDEX).exists():
        (out_dir / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                indent=2, sort_keys=True) + "\n")
    _write_config(base_dir, out_dir, dtype)
    return names + ([INDEX] if (out_dir / INDEX).exists() else [])


def _write_config(base_dir: Path, out_dir: Path, dtype: str) -> None:
    """The base's config with the merged dtype and without a quantisation section (the weights are plain)."""
    config = json.loads((base_dir / "config.json").read_text())
    config.pop("quantization_config", None)
    config.pop("torch_dtype", None)
    config["dtype"] = dtype
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    generation = base_dir / "generation_config.json"
    if generation.exists():
        shutil.copyfile(generation, out_dir / "generation_config.json")


# ---------------------------------------------------------------- in memory (peft's own merge)


def merge_in_memory(base_dir: Path, adapter_dir: Path, out_dir: Path, dtype: str,
                    progress: Callable[[str], None] = lambda line: None) -> None:
    """Load the unquantised base, apply the adapter with peft, merge_and_unload, save_pretrained."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings():  # the libraries' deprecation notices are not the user's to act on
        warnings.simplefilter("ignore", FutureWarning)
        # peft warns about AdaLoRA's saved rank pattern when it builds the full-rank layers, then applies it
        warnings.filterwarnings("ignore", message="The following rank_pattern keys", category=RuntimeWarning)
        base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=DTYPES[dtype], low_cpu_mem_usage=True)
        progress("base loaded")
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        progress("adapter merged")
        merged.save_pretrained(str(out_dir), safe_serialization=True)


def save_tokenizer(base_dir: Path, out_dir: Path) -> bool:
    """Copy the base's tokenizer (what the run trained with); False when the base has none."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    except (OSError, ValueError):
        return False
    tokenizer.save_pretrained(str(out_dir))
    return True
