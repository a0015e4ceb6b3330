"""Layer placement: one process spreads the frozen base over its devices, CPU and disk with an
accelerate device_map; only the LoRA weights train, and they are kept real on the execution device."""

import json

from accelerate import infer_auto_device_map, init_empty_weights
from accelerate.utils import get_balanced_memory
from peft.tuners.lora import LoraLayer
from peft.utils import load_peft_weights, set_peft_model_state_dict
from transformers import AutoConfig, AutoModelForCausalLM, TrainerCallback

from .core import STEPS, JobError, add_lora, log


def place_layers(cfg: dict, kwargs: dict) -> dict:
    kwargs = {**kwargs, "device_map": placement_map(cfg, kwargs), "offload_folder": cfg["backend"]["offload_folder"]}
    log(f"placement: {json.dumps(summarise_map(kwargs['device_map']))}")
    return kwargs


def placement_map(cfg: dict, load_kwargs: dict) -> dict:
    """The device_map (planned by qcompile, or inferred by accelerate from max_memory), with every
    offloaded block split to its leaf modules: offload hooks then sit on the frozen Linear layers
    that peft wraps, never on a parent of the LoRA weights (which would offload those too)."""
    backend = cfg["backend"]
    config = AutoConfig.from_pretrained(cfg["model"]["path"], revision=load_kwargs["revision"],
                                        trust_remote_code=load_kwargs["trust_remote_code"])
    with init_empty_weights():
        skeleton = AutoModelForCausalLM.from_config(config, dtype=load_kwargs["dtype"])
    device_map = backend.get("device_map")
    if not device_map:
        max_memory = {key if key in ("cpu", "disk") else int(key): size for key, size in backend["max_memory"].items()}
        no_split = skeleton._no_split_modules
        if backend.get("device_map_strategy") in ("auto", "balanced"):  # spread layers evenly over the GPUs
            max_memory = get_balanced_memory(skeleton, max_memory=max_memory, no_split_module_classes=no_split,
                                             dtype=load_kwargs["dtype"])
        device_map = infer_auto_device_map(skeleton, max_memory=max_memory, no_split_module_classes=no_split,
                                           dtype=load_kwargs["dtype"])
    main = backend["execution_device"]
    expanded = {}
    for name, device in device_map.items():
        module = skeleton.get_submodule(name) if name else skeleton
        offloaded = device in ("cpu", "disk") and device != main  # blocks on a GPU stay whole
        if not offloaded or not list(module.children()):
            expanded[name] = device
            continue
        for child, sub in module.named_modules():
            if child and not list(sub.children()):
                has_weights = any(True for _ in sub.parameters(recurse=False))
                expanded[f"{name}.{child}" if name else child] = device if has_weights else main
        if any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
            raise JobError(f"cannot split offloaded module {name!r}: it holds tensors itself")
    return expanded


def summarise_map(device_map: dict) -> dict:
    counts = {}
    for device in device_map.values():
        counts[str(device)] = counts.get(str(device), 0) + 1
    return counts


def add_placed_lora(model, cfg: dict):
    model = add_lora(model, cfg)
    materialise_lora(model, cfg["backend"]["execution_device"])
    return model


def materialise_lora(model, default_device: str) -> None:
    """peft puts adapters on the device of their base weight, which is `meta` when accelerate
    offloaded it; give them real storage on the execution device and initialise them."""
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        for adapter in list(module.lora_A.keys()):
            lora_a = module.lora_A[adapter]  # a Linear; AdaLoRA's is a bare Parameter
            if getattr(lora_a, "weight", lora_a).device.type != "meta":
                continue
            hook = getattr(module.get_base_layer(), "_hf_hook", None)
            device = getattr(hook, "execution_device", None) or default_device
            module.lora_A[adapter].to_empty(device=device)
            module.lora_B[adapter].to_empty(device=device)
            module.reset_lora_parameters(adapter, True)
    left = [name for name, p in model.named_parameters() if p.requires_grad and p.device.type == "meta"]
    if left:
        raise RuntimeError(f"LoRA parameters still on the meta device: {left[:3]}")


class EveryAdapterLearns(TrainerCallback):
    """Fail fast when a LoRA weight gets no gradient (e.g. accelerate offloaded it away)."""

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.global_step > 0 or model is None:
            return
        missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
        if missing:
            raise RuntimeError(f"{len(missing)} LoRA parameters received no gradient, e.g. {missing[:3]}")


def resume_in_place(check_trainer):
    """On resume Trainer loads the checkpoint's adapter with peft's load_adapter, which dispatches the whole
    model again and fails on the weights accelerate offloaded (they are on `meta`). The returned check
    (after the one it wraps) makes this Trainer load the adapter's tensors into the placed model instead;
    Trainer still restores the optimizer, scheduler, RNG and its state."""

    def checked(trainer) -> None:
        check_trainer(trainer)
        trainer._load_from_checkpoint = lambda checkpoint, model=None: load_adapter_in_place(trainer.model,
                                                                                            checkpoint)

    return checked


def load_adapter_in_place(model, checkpoint: str) -> None:
    weights = load_peft_weights(checkpoint, device="cpu")
    result = set_peft_model_state_dict(model, weights, adapter_name="default")
    if result.unexpected_keys:
        raise JobError(f"{checkpoint} holds adapter weights this model does not have, e.g. "
                       f"{result.unexpected_keys[:3]} (was the spec's lora section changed since?)")
    left = [name for name in result.missing_keys if ".lora_" in name]
    if left:
        raise JobError(f"{checkpoint} lacks adapter weights of this model, e.g. {left[:3]}")
    log(f"adapter weights loaded in place from {checkpoint}")


STEPS.place_model = place_layers
STEPS.add_adapters = add_placed_lora
STEPS.check_trainer = resume_in_place(STEPS.check_trainer)
STEPS.callbacks.append(EveryAdapterLearns())
