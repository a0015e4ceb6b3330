"""low_cpu_mem_usage: load on the meta device and memory-map the safetensors, so the ranks of a node
share one copy in the page cache; off, the planner counts a private copy per rank (planner.memory)."""

from __future__ import annotations

from pydantic import Field

from .base import PlainStrategy


class LowMemoryLoad(PlainStrategy):
    name = "low_cpu_mem_usage"
    field = (bool, Field(
        True,
        description="Keep host RAM at load near one copy per node: transformers 5 builds the model on the "
        "meta device and memory-maps safetensors (ranks share the page cache); with this on, the ranks of a "
        "node also load one after another so their transient peaks do not add up (ZeRO-3 instead "
        "partitions while loading). Off, the planner counts a private copy per rank.",
    ))

    def fixes(self, spec, backend) -> list:
        if spec.strategies.low_cpu_mem_usage:
            return []
        return [("strategies.low_cpu_mem_usage: true", {"strategies.low_cpu_mem_usage": True})]

    def train_config(self, spec) -> dict:
        # Read when the model is loaded, with the model section.
        return {"model": {"low_cpu_mem_usage": spec.strategies.low_cpu_mem_usage}}


STRATEGY = LowMemoryLoad()
