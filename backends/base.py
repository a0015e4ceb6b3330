"""The contract every backend keeps. Backends are small pure objects: they check a spec, build the
artifact dicts and the launch argv, and plan memory. They never render, write files or import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from qcompile.compiler.diagnostics import Diagnostic
    from qcompile.schemas import Spec


class Backend(Protocol):
    kind: str  # the spec's backend.kind
    uses_deepspeed: bool

    def check(self, spec: Spec) -> list[Diagnostic]:
        """Cross-field rules this backend adds (paths point into the spec)."""

    def processes(self, spec: Spec) -> int:
        """Processes launched per node."""

    def data_parallel_size(self, spec: Spec) -> int:
        """Model replicas that see different data (the batch arithmetic's world size)."""

    def ds_config(self, spec: Spec) -> dict | None:
        """The DeepSpeed JSON as a dict with concrete values, or None when DeepSpeed is not used."""

    def accelerate_config(self, spec: Spec) -> dict:
        """The accelerate config file as a dict."""

    def train_config(self, spec: Spec) -> dict:
        """The backend's part of train_config.json, which the generated train.py reads."""

    def launch_argv(self, spec: Spec) -> list[str]:
        """The launcher command, run from the build directory."""
