"""The compile context: built once per loaded spec and shared by checks, planner, backends and emit.

It holds the spec, its folder, the architecture (or why it is unknown) and the plans already made, so
nothing is resolved or planned twice. `for_backend` narrows it to one backend: the spec's `backend`
section then holds that backend's options, which is what every backend method reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from qcompile.backends.base import Backend
from qcompile.schemas.backend import with_backend
from qcompile.schemas.spec import Spec

from .planner.architecture import Architecture, ArchitectureUnknown
from .planner.memory import Context
from .planner.plan import Plan, memory_context, plan
from .planner.resolve import resolve_architecture


@dataclass(frozen=True)
class CompileContext:
    spec: Spec
    spec_dir: Path
    arch: Architecture | None
    arch_problem: ArchitectureUnknown | None = None  # why arch is None
    backend: Backend | None = None  # the backend this context is narrowed to (None: the spec's may be auto)
    plans: dict[str, Plan] = field(default_factory=dict, compare=False)  # shared by every narrowed copy

    @classmethod
    def build(cls, spec: Spec, spec_dir: Path) -> CompileContext:
        try:
            return cls(spec, Path(spec_dir), resolve_architecture(spec, Path(spec_dir)))
        except ArchitectureUnknown as exc:
            return cls(spec, Path(spec_dir), None, exc)

    def for_backend(self, backend: Backend) -> CompileContext:
        """This context for `backend`: the spec keeps its own options when it names that backend."""
        return replace(self, spec=with_backend(self.spec, backend.kind), backend=backend)

    @property
    def plan(self) -> Plan | None:
        """The memory plan of the narrowed backend, or None when the architecture is unknown."""
        if self.arch is None or self.backend is None:
            return None
        kind = self.backend.kind
        if kind not in self.plans:
            self.plans[kind] = plan(self.spec, self.arch, self.backend)
        return self.plans[kind]

    def plan_for(self, backend: Backend) -> Plan | None:
        return self.for_backend(backend).plan

    @property
    def memory_context(self) -> Context:
        """What the memory model reads (needs the architecture)."""
        if self.arch is None:
            raise ValueError("no architecture to plan with")
        return memory_context(self.spec, self.arch)
