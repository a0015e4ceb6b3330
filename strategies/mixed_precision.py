"""mixed_precision: autocast to bf16 or fp16 (or "no"). Its rules: never mix fp16 with bf16 weights,
warn where a GPU lacks bf16 or CPU autocast is fp16, and refuse fp16 on CPU for backends whose engine
has no CPU loss scaling (DeepSpeed)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from qcompile.compiler.diagnostics import error, warning
from qcompile.schemas.hardware import NO_BF16_GPUS

from .base import PlainStrategy

PATH = ("strategies", "mixed_precision")


def _yaml_no(value: object) -> object:
    # YAML 1.1 reads a bare `no` as false; that is what the user meant.
    return "no" if value is False else value


class MixedPrecision(PlainStrategy):
    name = "mixed_precision"
    field = (
        Annotated[Literal["no", "fp16", "bf16"], BeforeValidator(_yaml_no)],
        Field("bf16", description='Autocast compute dtype: "no", fp16 or bf16 (quote "no": YAML reads no as false).'),
    )

    def step_shape(self, spec) -> dict:
        """Autocast's dtype for the backends that autocast (DeepSpeed casts the module instead)."""
        mp = spec.strategies.mixed_precision
        return {"autocast_bytes": None if mp == "no" else 2}

    def check(self, spec, backend) -> list:
        out = []
        mp, dtype, hw = spec.strategies.mixed_precision, spec.model.dtype, spec.hardware
        if (mp, dtype) in (("bf16", "float16"), ("fp16", "bfloat16")):
            out.append(error(PATH, f"mixed_precision {mp} with {dtype} weights mixes fp16 and bf16", "fp16_and_bf16",
                             f"use mixed_precision: {'fp16' if dtype == 'float16' else 'bf16'}, "
                             f"or model.dtype: {'bfloat16' if mp == 'bf16' else 'float16'}"))
        gpu = (hw.gpu or "").upper().replace(" ", "").replace("-", "")
        if (mp == "bf16" or dtype == "bfloat16") and hw.accelerator == "cuda" and gpu.startswith(NO_BF16_GPUS):
            out.append(warning(PATH, f"{hw.gpu} has no native bfloat16; bf16 will be slow or refused",
                               "bf16_unsupported", "use fp16 with float16 weights on this GPU"))
        if mp == "fp16" and hw.accelerator == "cpu":
            if backend.accepts.fp16_on_cpu:
                out.append(warning(PATH, "fp16 autocast on CPU is slow and partly unsupported", "fp16_on_cpu",
                                   'use bf16 or "no" on CPU'))
            else:
                out.append(error(PATH, f"{backend.kind} has no fp16 loss scaling on CPU", "fp16_on_cpu",
                                 'use bf16 or "no" with accelerator: cpu'))
        return out


STRATEGY = MixedPrecision()
