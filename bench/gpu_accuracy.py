"""The plan against real steps on an accelerator, per backend: full-width, few-layer slices of 7B and
72B shapes run one real LoRA step on CUDA and torch.cuda.max_memory_allocated is compared with the
plan's tensor bytes (plus ZeRO's communication buckets) for one device.

- single-process backends (the layer-placing ones): the step the generated script runs (autocast,
  peft's fp32 adapters, non-reentrant checkpointing, sdpa, torch AdamW), trace.real_step_peak;
- DeepSpeed backends (one rank): the model built as Trainer builds it (inside zero.Init for stage 3),
  deepspeed.initialize with the ds_config qcompile emits, engine forward, backward and step.

`dry=True` runs the same code on CPU at tiny width (the tests run it: no GPU is lent to CI); the CPU
peak is every live tensor plus what the dispatcher sees allocated. Run: python bench/planner_accuracy.py
--gpu [--dry]
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

MiB = 2**20
ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PRECISIONS = (("bfloat16", "bf16"), ("float32", "bf16"))
TINY = dict(num_layers=2, hidden_size=64, intermediate_size=176, num_heads=4, num_kv_heads=2, vocab_size=1000,
            seq_len=64)


def gpu_cases() -> list[tuple[str, dict]]:
    """7B and 72B slices (Qwen2.5 shapes), both precision pairs, checkpointing off and on."""
    from tests.compiler.planner.accuracy_grid import catalog_shape

    cases = []
    for label, model, layers in (("7B", "Qwen/Qwen2.5-7B", 4), ("72B", "Qwen/Qwen2.5-72B", 2)):
        for dtype, mp in PRECISIONS:
            for checkpointing in (False, True):
                name = f"{label} x{layers} {dtype}/{mp}{' ckpt' if checkpointing else ''}"
                cases.append((name, dict(catalog_shape(model, layers), dtype=dtype, mixed_precision=mp, seq_len=4096,
                                         r=16, target_modules=ALL, checkpointing=checkpointing)))
    return cases


def dry_cases() -> list[tuple[str, dict]]:
    return [(f"tiny {dtype}/{mp}", dict(TINY, dtype=dtype, mixed_precision=mp, target_modules=ALL))
            for dtype, mp in PRECISIONS]


def _context(case, backend, accelerator: str, folder: Path):
    """The compile context of the case's spec narrowed to `backend` (one device or rank)."""
    from qcompile.compiler.context import CompileContext
    from qcompile.schemas.spec import Spec
    from tests.compiler.planner.accuracy_grid import spec_data

    data = spec_data(case, folder)
    data["hardware"]["accelerator"] = accelerator
    data["backend"] = backend.kind
    data["data"]["path"] = str(folder / "data.jsonl")
    (folder / "data.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    spec = Spec.model_validate(data)
    return CompileContext.build(spec, folder).for_backend(backend)


def planned_bytes(ctx) -> int:
    """What the allocator should see: the plan's tensors plus the communication buckets."""
    device = ctx.plan.devices[0]
    return device.tensor_bytes + device.breakdown.get("comm_buckets", 0)


def _single_rank_env() -> None:
    """A one-rank process group for deepspeed.initialize outside a launcher."""
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)


def deepspeed_step_peak(case, ds_config: dict, device: str) -> int:
    """One real ZeRO step of `case` on one rank with qcompile's ds_config."""
    import deepspeed
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig

    from qcompile.compiler.planner.trace import measured_step_peak

    _single_rank_env()
    deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo")
    keep = HfDeepSpeedConfig(ds_config)  # noqa: F841 - zero.Init in from_config for stage 3, as Trainer does
    config = AutoConfig.for_model(**case.config_dict())
    config._attn_implementation = case.attention
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, case.dtype))
    lora = LoraConfig(r=case.r, lora_alpha=2 * case.r, target_modules=list(case.target_modules),
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    if case.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, foreach=False)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    ids = torch.randint(0, case.vocab_size, (case.batch, case.seq_len), device=engine.device)

    def step() -> None:
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()

    return measured_step_peak(step, device)  # one measurement per process (measure): nothing to tear down


def measure(case_fields: dict, ds_config: dict | None, device: str) -> int:
    """One measurement in a fresh process: nothing another engine or model left behind is counted,
    and each DeepSpeed engine gets its own process group."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), json.dumps([case_fields, ds_config, device])],
                          capture_output=True, text=True, cwd=root, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if done.returncode != 0:
        raise RuntimeError(f"measurement failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak"]


def _worker(argument: str) -> None:
    from qcompile.compiler.planner.trace import TraceCase, real_step_peak

    fields, ds_config, device = json.loads(argument)
    fields["target_modules"] = tuple(fields["target_modules"])
    case = TraceCase(**fields)
    peak = real_step_peak(case, device) if ds_config is None else deepspeed_step_peak(case, ds_config, device)
    print(json.dumps({"peak": peak}))


def run(dry: bool = False, cases: list[tuple[str, dict]] | None = None) -> list[dict]:
    """Every case (the 7B/72B slices; tiny ones when dry) under every built-in backend; prints a table
    and returns its rows."""
    import dataclasses

    from qcompile.backends.registry import BUILTINS
    from qcompile.compiler.planner.trace import TraceCase

    device = "cpu" if dry else "cuda"
    if device == "cuda" and not _cuda_available():
        raise SystemExit("error: no CUDA device; run with --dry to exercise the same code on CPU")
    rows = []
    print(f"plan vs real step on {device} (MiB; planned = tensors + ZeRO buckets, one device/rank)")
    print(f"{'case':34s} {'backend':24s} {'measured':>9s} {'planned':>9s} {'error':>8s}")
    for name, changes in cases or (dry_cases() if dry else gpu_cases()):
        case = TraceCase(**changes)
        single = None  # the single-process step is the same for every layer-placing backend on one device
        for backend in BUILTINS.values():
            with tempfile.TemporaryDirectory() as tmp:
                ctx = _context(case, backend, device, Path(tmp))
                ds_config = backend.ds_config(ctx)
                planned = planned_bytes(ctx)
            if ds_config is None:
                single = single if single is not None else measure(dataclasses.asdict(case), None, device)
                measured = single
            else:
                measured = measure(dataclasses.asdict(case), ds_config, device)
            error = (planned - measured) / measured
            rows.append({"case": name, "backend": backend.kind, "measured": measured, "planned": planned,
                         "error": error, "single_process": ds_config is None})
            print(f"{name:34s} {backend.kind:24s} {measured / MiB:9.1f} {planned / MiB:9.1f} {error:+8.2%}",
                  flush=True)
    return rows


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    _worker(sys.argv[1])
