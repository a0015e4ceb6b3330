"""Every job: read and check the data, load the base model and add the LoRA adapters, train with HF
Trainer, keep checkpoints resumable and save the adapter. Other parts replace steps in STEPS."""

import argparse
import json
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import (
    AutoTokenizer,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_callback import PrinterCallback

# The libraries' deprecation notices are not actionable in a generated job and bury the progress lines.
warnings.filterwarnings("ignore", category=FutureWarning)

CHECKPOINTS = "checkpoints"
COMMITTED = "QCOMPILE_COMPLETE"  # written last: a checkpoint without it was interrupted mid-write


class JobError(Exception):
    """A problem the user can fix (bad data row, wrong world size, existing run): exit 1, no traceback."""


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def log(message: str) -> None:
    if rank() == 0:
        print(message, flush=True)


# ---------------------------------------------------------------- model


def load_kwargs(cfg: dict) -> dict:
    """from_pretrained's arguments for the base model; a placement part adds its device_map."""
    model_cfg = cfg["model"]
    return {
        "dtype": getattr(torch, model_cfg["dtype"]),
        "revision": model_cfg["revision"],
        "trust_remote_code": model_cfg["trust_remote_code"],
        "attn_implementation": model_cfg["attention"],
    }


def load_base_model(cfg: dict):
    if STEPS.load_model is None:
        raise RuntimeError("no part of this script loads the model (its backend names no loading part)")
    return STEPS.load_model(cfg, STEPS.quantize(cfg, STEPS.place_model(cfg, load_kwargs(cfg))))


def lora_config(cfg: dict):
    """peft's config for lora, dora (use_dora) and rslora (use_rslora: alpha / sqrt(r))."""
    lora = cfg["lora"]
    return LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"],
        layers_to_transform=lora["layers"],
        use_dora=lora["method"] == "dora",
        use_rslora=lora["method"] == "rslora",
        task_type="CAUSAL_LM",
    )


def add_lora(model, cfg: dict):
    model = get_peft_model(STEPS.prepare_base(model, cfg), STEPS.lora_config(cfg))
    if cfg["lora"]["dtype"] != "float32":  # peft makes adapters fp32; lora.dtype stores them smaller
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.to(getattr(torch, cfg["lora"]["dtype"]))
    if cfg["strategies"]["gradient_checkpointing"]:
        model.enable_input_require_grads()  # the frozen embedding output must carry grad into checkpoints
    return model


def total_steps(cfg: dict, examples: int) -> int:
    """Optimizer steps of the whole run, as Trainer counts them (AdaLoRA's schedule needs it up front)."""
    train = cfg["training"]
    if train["max_steps"]:
        return train["max_steps"]
    batches = -(-examples // (train["micro_batch_size"] * cfg["world_size"]))
    return train["epochs"] * max(batches // train["gradient_accumulation_steps"], 1)


# ---------------------------------------------------------------- trainer


def training_arguments(cfg: dict, config_dir: Path) -> TrainingArguments:
    train, strategies = cfg["training"], cfg["strategies"]
    precision = strategies["mixed_precision"]
    return TrainingArguments(
        output_dir=str(Path(train["output_dir"]) / CHECKPOINTS),
        per_device_train_batch_size=train["micro_batch_size"],
        gradient_accumulation_steps=train["gradient_accumulation_steps"],
        num_train_epochs=train["epochs"],
        max_steps=train["max_steps"] or -1,
        learning_rate=train["learning_rate"],
        weight_decay=train["weight_decay"],
        warmup_steps=train["warmup_steps"],
        lr_scheduler_type=train["lr_scheduler"],
        max_grad_norm=train["max_grad_norm"],
        optim=train["optim"],  # adamw_torch_fused (one kernel for all LoRA tensors), or bitsandbytes' 8-bit AdamW
        seed=train["seed"],
        data_seed=train["seed"],
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        activation_checkpointing=strategies["gradient_checkpointing"],
        activation_checkpointing_kwargs={"use_reentrant": False},
        save_strategy="steps",
        save_steps=train["save_steps"],
        logging_steps=train["logging_steps"],
        logging_nan_inf_filter=False,  # a non-finite loss must reach StopOnNonFinite, not be averaged away
        use_cpu=cfg["accelerator"] == "cpu",
        **STEPS.tracking_arguments(cfg),
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        **STEPS.data_arguments(cfg),
        **STEPS.engine_arguments(cfg, config_dir),
    )


class Progress(TrainerCallback):
    """Steps, loss, tokens/s, elapsed and ETA on the terminal, and one JSON line per log in metrics.jsonl."""

    def __init__(self, metrics_path: Path):
        self.metrics_path = metrics_path
        self.start = self.last_time = time.time()
        self.last_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = self.last_time = time.time()
        self.last_tokens = state.num_input_tokens_seen or 0
        self.first_step = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs and "eval_loss" in logs:
            self.log_eval(state, logs["eval_loss"])
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        now = time.time()
        tokens = state.num_input_tokens_seen or 0
        rate = (tokens - self.last_tokens) / max(now - self.last_time, 1e-9)
        self.last_time, self.last_tokens = now, tokens
        elapsed = now - self.start
        done = state.global_step - self.first_step
        eta = elapsed / done * (state.max_steps - state.global_step) if done else 0.0
        record = {"step": state.global_step, "max_steps": state.max_steps, "loss": logs["loss"],
                  "learning_rate": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
                  "tokens": tokens, "tokens_per_s": rate,
                  "elapsed_s": elapsed, "eta_s": eta}
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        print(f"step {state.global_step}/{state.max_steps} | loss {logs['loss']:.4f} | {rate:,.0f} tok/s"
              f" | elapsed {clock(elapsed)} | eta {clock(eta)}", flush=True)


    def log_eval(self, state, eval_loss: float) -> None:
        """Trainer reduces the eval loss over every rank's shard before it logs it."""
        record = {"step": state.global_step, "max_steps": state.max_steps, "eval_loss": eval_loss}
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        print(f"step {state.global_step}/{state.max_steps} | eval_loss {eval_loss:.4f}", flush=True)


class StopOnNonFinite(TrainerCallback):
    """A loss or gradient norm that is not finite ends the run with an error naming the step; nothing
    trained after it is saved (the final adapter is checked too: save_adapter)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(value):
                raise JobError(f"step {state.global_step}: {key} is {value}; stopping without saving an adapter "
                               "(lower training.learning_rate, or check the data)")


def clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class CommitCheckpoint(TrainerCallback):
    """Trainer writes checkpoint-N in place; once every rank has finished writing it, rank 0 adds
    the marker atomically. Resume only trusts checkpoints that carry it."""

    def on_save(self, args, state, control, **kwargs):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            write_atomically(folder / COMMITTED, json.dumps({"step": state.global_step}) + "\n")


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def latest_checkpoint(output_dir: Path):
    folder = output_dir / CHECKPOINTS
    done = [p for p in folder.glob("checkpoint-*") if (p / COMMITTED).exists() and p.name.split("-")[-1].isdigit()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def discard_interrupted_checkpoints(output_dir: Path, resumed: Path) -> None:
    """Checkpoints newer than the one resumed were being written when the run died: the resumed run
    writes them again, and must not find half of an old one there."""
    step = int(resumed.name.split("-")[-1])
    for folder in (output_dir / CHECKPOINTS).glob("checkpoint-*"):
        number = folder.name.split("-")[-1]
        if number.isdigit() and int(number) > step and not (folder / COMMITTED).exists():
            shutil.rmtree(folder)
            log(f"discarded {folder.name}: interrupted while being written")


def save_adapter(trainer: Trainer, output_dir: Path) -> None:
    """Write the final adapter next to a temporary copy, check every value is finite, then move each file
    into place: a run that went wrong never leaves an adapter behind."""
    staging = output_dir / ".adapter.tmp"
    trainer.save_model(str(staging))
    if trainer.is_world_process_zero():
        bad = [name for name, tensor in load_file(str(staging / "adapter_model.safetensors")).items()
               if not torch.isfinite(tensor).all()]
        if bad:
            shutil.rmtree(staging, ignore_errors=True)
            raise JobError(f"the trained adapter holds non-finite values ({bad[0]} and {len(bad) - 1} more); "
                           "not saved (lower training.learning_rate, or check the data)")
        for item in staging.iterdir():
            os.replace(item, output_dir / item.name)
        shutil.rmtree(staging, ignore_errors=True)


def copy_adapter(checkpoint: Path, output_dir: Path) -> None:
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        temporary = output_dir / f".{name}.tmp"
        shutil.copyfile(checkpoint / name, temporary)
        os.replace(temporary, output_dir / name)


# ---------------------------------------------------------------- steps the other parts replace


def unplaced(cfg: dict, kwargs: dict) -> dict:
    return kwargs


def no_engine(cfg: dict, config_dir: Path) -> dict:
    return {}


def no_check(trainer: Trainer) -> None:
    return None


def unquantized(cfg: dict, kwargs: dict) -> dict:
    return kwargs


def unprepared(model, cfg: dict):
    return model


def no_data(cfg: dict, tokenizer) -> tuple[list, list]:
    raise RuntimeError("no part of this script reads the data (the data part is missing)")


@dataclass
class Steps:
    """What a backend's parts change in the job: each part assigns its functions here, below them."""

    load_model: Callable[[dict, dict], Any] | None = None  # (cfg, from_pretrained kwargs) -> base model
    place_model: Callable[[dict, dict], dict] = unplaced  # (cfg, kwargs) -> kwargs with a device_map
    quantize: Callable[[dict, dict], dict] = unquantized  # (cfg, kwargs) -> kwargs with a quantization_config
    prepare_base: Callable[[Any, dict], Any] = unprepared  # (base model, cfg) -> model ready for adapters
    lora_config: Callable[[dict], Any] = lora_config  # cfg -> the peft config
    add_adapters: Callable[[Any, dict], Any] = add_lora  # (base model, cfg) -> peft model
    engine_arguments: Callable[[dict, Path], dict] = no_engine  # (cfg, config dir) -> more TrainingArguments
    callbacks: list = field(default_factory=list)  # TrainerCallbacks besides progress and checkpoint commits
    check_trainer: Callable[[Trainer], None] = no_check  # refuse a Trainer that is not set up as planned
    build_data: Callable[[dict, Any], tuple] = no_data  # (cfg, tokenizer) -> (train rows, eval rows)
    data_collator: Callable[[dict, Any], Any] = lambda cfg, tokenizer: None  # (cfg, tokenizer) -> collator
    data_arguments: Callable[[dict], dict] = lambda cfg: {}  # (cfg) -> eval and token-count TrainingArguments
    tracking_arguments: Callable[[dict], dict] = lambda cfg: {"report_to": "none"}  # (cfg) -> trackers, run name
    finish: Callable[[Path, str | None], None] = lambda config, error: None  # (config, error or None): summary


STEPS = Steps()


# ---------------------------------------------------------------- main

# Paths in train_config.json, and the variables that override them at launch (a build copied elsewhere).
PATHS = (("model", "path", "QCOMPILE_MODEL_PATH"), ("model", "tokenizer", "QCOMPILE_MODEL_PATH"),
         ("data", "path", "QCOMPILE_DATA_PATH"), ("training", "output_dir", "QCOMPILE_OUTPUT_DIR"),
         ("data", "eval_path", None), ("data", "chat_template", None), ("backend", "offload_folder", None))


def read_config(config_path: Path) -> dict:
    """train_config.json with its paths made absolute: "./x" and "../x" are relative to the folder of the
    config (the build directory), and QCOMPILE_MODEL_PATH/_DATA_PATH/_OUTPUT_DIR replace them when set."""
    cfg = json.loads(config_path.read_text(encoding="utf-8"))
    for section, key, variable in PATHS:
        if key not in cfg[section]:
            continue
        value = (os.environ.get(variable) if variable else None) or cfg[section][key]
        if isinstance(value, str) and value.startswith(("./", "../")):
            value = str((config_path.parent / value).resolve())
        cfg[section][key] = value
    return cfg


def run(config_path: Path, resume: bool) -> None:
    cfg = read_config(config_path)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size != cfg["world_size"]:
        raise JobError(f"launched with {world_size} processes but the spec asks for {cfg['world_size']}; "
                       "use the launch command qcompile emitted")
    output_dir = Path(cfg["training"]["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = latest_checkpoint(output_dir)
    if resume and checkpoint is None:
        log(f"no complete checkpoint in {output_dir / CHECKPOINTS}; starting from step 0")
    if not resume and checkpoint is not None:
        raise JobError(f"{output_dir} already holds checkpoints of a run; resume it with --resume "
                       "or choose another training.output_dir")
    set_seed(cfg["training"]["seed"])

    tokenizer = AutoTokenizer.from_pretrained(cfg["model"]["tokenizer"], revision=cfg["model"]["revision"],
                                              trust_remote_code=cfg["model"]["trust_remote_code"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset, eval_dataset = STEPS.build_data(cfg, tokenizer)  # every row is checked before the model loads
    log(f"{len(dataset)} examples from {cfg['data']['path'] or cfg['data']['hub_id']} ({cfg['data']['format']})"
        + (f", {len(eval_dataset)} for eval" if eval_dataset else ""))
    cfg["training"]["total_steps"] = total_steps(cfg, len(dataset))

    args = training_arguments(cfg, config_path.parent)  # initialises torch.distributed when distributed
    model = STEPS.add_adapters(load_base_model(cfg), cfg)
    if rank() == 0:
        model.print_trainable_parameters()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=eval_dataset or None,
        data_collator=STEPS.data_collator(cfg, tokenizer),
        # the commit marker last: a part's on_save (e.g. AdaLoRA's allocator state) is inside the commit
        callbacks=[Progress(output_dir / "metrics.jsonl"), StopOnNonFinite(), *STEPS.callbacks, CommitCheckpoint()],
    )
    trainer.remove_callback(PrinterCallback)  # Progress prints the same, with tokens/s and ETA
    STEPS.check_trainer(trainer)
    if resume and checkpoint is not None:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        if state["global_step"] >= state["max_steps"]:  # Trainer would run one step past the end
            log(f"{checkpoint} is the end of the run (step {state['global_step']}); keeping its adapter")
            if rank() == 0:
                copy_adapter(checkpoint, output_dir)
            return
        log(f"resuming from {checkpoint}")
        if rank() == 0:
            discard_interrupted_checkpoints(output_dir, checkpoint)
    trainer.train(resume_from_checkpoint=str(checkpoint) if resume and checkpoint is not None else None)
    save_adapter(trainer, output_dir)
    log(f"adapter saved to {output_dir}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="train_config.json written by qcompile")
    parser.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint")
    options = parser.parse_args(argv)
    error = "interrupted"
    try:
        run(options.config.resolve(), options.resume)
        error = None
    except JobError as exc:
        error = str(exc)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        STEPS.finish(options.config.resolve(), error)
        leave_process_group()
    return 0


def leave_process_group() -> None:
    """Tear the process group down before the interpreter does: gloo's threads dying at exit can
    abort a rank that has finished its work."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
