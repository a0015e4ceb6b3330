"""lora.dtype: the storage dtype of the adapter weights. peft keeps them in fp32; bfloat16 halves the
adapter, its gradients and AdamW's states on the single-process backends (DeepSpeed's bf16 engine
casts the adapters to bf16 and keeps an fp32 master copy either way, so there it changes nothing)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from qcompile.compiler.diagnostics import warning

from .base import PlainStrategy

PATH = ("lora", "dtype")


class AdapterDtype(PlainStrategy):
    name = "dtype"
    section = "lora"
    field = (Literal["float32", "bfloat16"], Field(
        "float32", description="Adapter storage dtype: float32 (peft's default) or bfloat16 (half the adapter "
        "and optimizer bytes on single-process backends; DeepSpeed keeps an fp32 master copy anyway).",
    ))

    def check(self, spec, backend) -> list:
        if spec.lora.dtype == "bfloat16" and backend.accepts.fp32_master_copy:
            return [warning(PATH, f"{backend.kind} keeps an fp32 master copy of the adapters; lora.dtype bfloat16 "
                            "saves nothing there", "adapter_dtype_ignored", "remove lora.dtype")]
        return []

    def fixes(self, spec, backend) -> list:
        if spec.lora.dtype == "bfloat16" or backend.accepts.fp32_master_copy:
            return []
        return [("lora.dtype: bfloat16", {"lora.dtype": "bfloat16"})]


STRATEGY = AdapterDtype()
