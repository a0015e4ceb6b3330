"""activation_offload: every tensor saved for backward (checkpointed layer inputs included: the
non-reentrant checkpoint saves them through the saved-tensor hooks) is copied to pinned host memory
during forward and back to its device when backward needs it (templates/script/saved_activations.py).
Frozen weights, and views of them, stay where they are. On a CPU node there is no other memory to move
to, so the plan (and the job) change nothing there."""

from __future__ import annotations

from pydantic import Field

from qcompile.compiler.diagnostics import warning

from .base import PlainStrategy

PATH = ("strategies", "activation_offload")


class ActivationOffload(PlainStrategy):
    name = "activation_offload"
    field = (bool, Field(False, description="Keep saved activations in host memory between forward and "
                                            "backward (CUDA; pinned)."))
    script_parts = ("saved_activations",)
    # step time / standard step time, bench/strategy_cost.py on the compute-bound shape (CPU, loaded machine;
    # the order chunked loss < offload < int8 held in both runs, the ratios did not)
    speed_cost = 0.97

    def parts(self, spec) -> tuple[str, ...]:
        return self.script_parts if spec.strategies.activation_offload else ()

    def check(self, spec, backend) -> list:
        if spec.strategies.activation_offload and spec.hardware.accelerator == "cpu":
            return [warning(PATH, "activation_offload on a CPU node moves nothing: activations already live in "
                            "host memory", "activation_offload_on_cpu",
                            "remove strategies.activation_offload, or use accelerator: cuda")]
        return []

    def step_shape(self, spec) -> dict:
        on = spec.strategies.activation_offload and spec.hardware.accelerator == "cuda"
        return {"activation_offload": True} if on else {}

    def fixes(self, spec, backend) -> list:
        if spec.strategies.activation_offload or spec.hardware.accelerator != "cuda":
            return []
        return [("strategies.activation_offload: true", {"strategies.activation_offload": True})]


STRATEGY = ActivationOffload()
