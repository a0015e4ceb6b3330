"""`backend:` which engine trains; a name, or a mapping with `kind` and that engine's options.

The kinds and their options come from the backend registry (built-ins and plugins): each backend's
`options` fields become one member of a union discriminated by `kind`."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, create_model

from qcompile.backends.registry import all_backends
from qcompile.strategies import STRATEGIES

from ._base import Section


class AutoBackend(Section):
    kind: Literal["auto"] = Field(description="Pick the fastest backend whose plan fits the budget.")


def options_model(backend) -> type[Section]:
    """The backend's section: its option fields plus `kind` fixed to its name."""
    name = "".join(part.capitalize() for part in backend.kind.replace("_", "-").split("-")) + "Backend"
    return create_model(
        name,
        __base__=backend.options,
        __doc__=backend.description,
        kind=(Literal[backend.kind], Field(description=backend.description)),
    )


BACKEND_MODELS: dict[str, type[Section]] = {kind: options_model(b) for kind, b in all_backends().items()}
BACKEND_KINDS: tuple[str, ...] = ("auto", *BACKEND_MODELS)

BackendSpec = Annotated[
    Union[(AutoBackend, *BACKEND_MODELS.values())],  # noqa: UP007 - built from the registry at import
    Field(discriminator="kind"),
]


def default_options(kind: str) -> Section:
    """The options a backend has when the spec names another backend (or auto)."""
    return BACKEND_MODELS[kind](kind=kind)


def with_backend(spec, kind: str):
    """`spec` as `kind` runs it: its own backend options when it names that backend, else the defaults;
    and each strategy's backend-dependent defaults filled in (e.g. where offloaded weights go)."""
    if spec.backend.kind != kind:
        spec = spec.model_copy(update={"backend": default_options(kind)})
    backend = all_backends()[kind]
    for strategy in STRATEGIES:
        spec = strategy.for_backend(spec, backend)
    return spec


def describe_kinds() -> str:
    return " | ".join(BACKEND_KINDS)


__all__ = ["BACKEND_KINDS", "BACKEND_MODELS", "AutoBackend", "BackendSpec", "default_options"]
