"""The contract every memory strategy keeps.

A strategy is one object: the spec section it owns keys in (`section`: "strategies", "model", "lora" or
"training") and its key(s) there (`fields()`: name -> (type, Field with default and description); by
default the one `field` under `name`), the rules it
adds and which backends accept it (`check`), what it changes in the planner's step shape
(`step_shape`), the smaller-memory settings the planner may suggest (`fixes`), and what the generated
train.py reads for it (`train_config`, by section of train_config.json). The strategies section of the
spec, the planner's inputs, its
suggestions and train_config.json all derive from the registry in __init__.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from qcompile.backends.base import Backend
    from qcompile.compiler.diagnostics import Diagnostic
    from qcompile.schemas.spec import Spec

# (description of the change, {dotted spec key: new value})
Change = tuple[str, dict[str, Any]]


@runtime_checkable
class Strategy(Protocol):
    name: str  # its (main) key in its section
    section: str  # the spec section its keys live in: "strategies", "model", "lora" or "training"
    field: tuple[Any, Any]  # (annotation, pydantic Field with default and description)
    script_parts: tuple[str, ...]  # generated-script parts it needs (templates/script/), after the backend's

    def fields(self) -> dict[str, tuple[Any, Any]]:
        """Every key it adds to its section: name -> (annotation, Field)."""

    def parts(self, spec: Spec) -> tuple[str, ...]:
        """The script parts this spec needs from it: some of script_parts, or none when it is off."""

    def check(self, spec: Spec, backend: Backend) -> list[Diagnostic]:
        """Rules across sections, and whether `backend` accepts this strategy's setting."""

    def step_shape(self, spec: Spec) -> dict[str, Any]:
        """The planner's StepShape fields this strategy sets."""

    def for_backend(self, spec: Spec, backend: Backend) -> Spec:
        """The spec with this strategy's backend-dependent defaults filled in for `backend`."""

    def fixes(self, spec: Spec, backend: Backend) -> list[Change]:
        """Settings of this strategy that use less memory than the spec's, smallest change first."""

    def train_config(self, spec: Spec) -> dict[str, dict[str, Any]]:
        """What the generated train.py reads for it: {section of train_config.json: {key: value}}."""


class PlainStrategy:
    """Defaults for a strategy that adds no rule, no step-shape input and no fix."""

    section = "strategies"
    script_parts: tuple[str, ...] = ()

    def fields(self) -> dict[str, tuple[Any, Any]]:
        return {self.name: self.field}

    def parts(self, spec) -> tuple[str, ...]:
        return ()

    def value(self, spec) -> Any:
        return getattr(getattr(spec, self.section), self.name)

    def check(self, spec, backend) -> list:
        return []

    def step_shape(self, spec) -> dict[str, Any]:
        return {}

    def for_backend(self, spec, backend):
        return spec

    def fixes(self, spec, backend) -> list[Change]:
        return []

    def train_config(self, spec) -> dict[str, dict[str, Any]]:
        return {self.section: {self.name: self.value(spec)}}
