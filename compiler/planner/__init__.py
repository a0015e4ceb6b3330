"""The memory planner: predicts GPU and host memory per backend from the architecture alone.

Imports no torch (trace.py, the ground-truth tracer, imports it inside its functions). The pipeline:
resolve.py finds the architecture (config.json, local dir, HF cache, catalog); memory.py holds what
every backend's placement reads (each backend's memory model lives with the backend, in backends/);
activations.py says what a step saves; plan.py makes one backend's plan. Choosing a backend for
`auto` and suggesting fixes need every backend and the spec's rules: compiler/choose.py.
"""

from .architecture import Architecture, ArchitectureUnknown
from .resolve import resolve_architecture

__all__ = ["Architecture", "ArchitectureUnknown", "resolve_architecture"]
