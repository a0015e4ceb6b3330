"""model.quantization: load the frozen base through bitsandbytes, 4-bit (NF4/FP4, optionally with double
quantisation of the block scales) or 8-bit (LLM.int8 with row scales): QLoRA. Which bit widths a backend
can load is its `accepts.quantized_base`; the bytes are in the shared memory model (planner.memory)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from qcompile.backends.registry import by_speed
from qcompile.compiler.diagnostics import error
from qcompile.schemas._base import Section

from .base import PlainStrategy

PATH = ("model", "quantization")


class QuantizationSpec(Section):
    bits: Literal[4, 8] = Field(description="4 (QLoRA: NF4/FP4 blocks of 64) or 8 (LLM.int8 with row scales).")
    type: Literal["nf4", "fp4"] | None = Field(None, description="4-bit data type (4-bit only); null: nf4.")
    double_quant: bool = Field(True, description="4-bit only: quantise the per-block scales again to 8 bits.")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="Dtype the quantised weights are dequantised to for each matmul (4-bit)."
    )

    @model_validator(mode="after")
    def _four_bit_keys(self):
        if self.bits == 8 and self.type is not None:
            raise ValueError("type (nf4/fp4) is a 4-bit setting; remove it for bits: 8")
        return self

    @property
    def quant_type(self) -> str:
        return self.type or "nf4"


class Quantization(PlainStrategy):
    name = "quantization"
    section = "model"
    field = (QuantizationSpec | None, Field(
        None, description="Quantised frozen base (bitsandbytes): null, or {bits: 4|8, type: nf4|fp4, "
        "double_quant, compute_dtype}. Embeddings, head and norms stay unquantised (fp32 once prepared).",
    ))
    script_parts = ("quantized_load",)

    def check(self, spec, backend) -> list:
        quant = spec.model.quantization
        if quant is None:
            return []
        out = []
        if quant.bits not in backend.accepts.quantized_base:
            able = [b.kind for b in by_speed() if quant.bits in b.accepts.quantized_base]
            why = backend.accepts.quantized_base_why or "it cannot load a bitsandbytes-quantised base"
            out.append(error(PATH, f"{backend.kind} cannot train on a {quant.bits}-bit base: {why}",
                             "quantization_unsupported",
                             f"use backend {' or '.join(able)}, or model.quantization: null" if able
                             else "use model.quantization: null"))
        if spec.strategies.offload.params != "none":
            out.append(error(PATH, "transformers does not quantise the layers a device_map sends to CPU or disk "
                             "(llm_int8_enable_fp32_cpu_offload keeps them in fp32), so offloaded layers would be "
                             "full precision", "quantization_with_offload",
                             "use strategies.offload.params: none with a quantised base (it is 4x smaller), "
                             "or model.quantization: null"))
        return out

    def fixes(self, spec, backend) -> list:
        if spec.model.quantization is not None or spec.strategies.offload.params != "none":
            return []
        return [(f"model.quantization: {{bits: {bits}}}", {"model.quantization": QuantizationSpec(bits=bits)})
                for bits in (4, 8) if bits in backend.accepts.quantized_base]

    def parts(self, spec) -> tuple[str, ...]:
        return self.script_parts if spec.model.quantization is not None else ()

    def train_config(self, spec) -> dict:
        quant = spec.model.quantization
        if quant is None:
            return {"model": {"quantization": None}}
        return {"model": {"quantization": {
            "bits": quant.bits,
            "type": quant.quant_type if quant.bits == 4 else None,
            "double_quant": quant.double_quant if quant.bits == 4 else False,
            "compute_dtype": quant.compute_dtype,
        }}}


STRATEGY = Quantization()
