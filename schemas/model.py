"""`model:` which weights to tune and how they are loaded."""

from typing import Literal

from pydantic import Field, create_model

from qcompile.strategies import section_fields

from ._base import PathStr, Section

Dtype = Literal["float32", "bfloat16", "float16"]


class _ModelSpecBase(Section):
    name: PathStr = Field(description="Hub id (e.g. Qwen/Qwen1.5-72B-Chat) or a local model directory.")
    revision: str | None = Field(None, min_length=1, max_length=255,
                                 description="Hub revision (branch, tag or commit); null for the default.")
    dtype: Dtype = Field("bfloat16", description="Dtype of the frozen base weights once loaded.")
    trust_remote_code: bool = Field(False, description="Allow the model's own Python code from the hub to run.")
    config: PathStr | None = Field(
        None,
        description="Path to a config.json describing the architecture; lets qcompile plan without weights.",
    )
    device_map: Literal["auto", "balanced", "sequential"] | None = Field(
        None,
        description="How accelerate spreads layers over the GPUs, for a backend that lets it place them: "
        "sequential (fill each GPU in turn; the default) or balanced/auto (even shares). Backends that shard "
        "the model refuse it; a backend that splits layers by its own memory plan ignores it.",
    )


ModelSpec = create_model(
    "ModelSpec",
    __base__=_ModelSpecBase,
    __doc__=_ModelSpecBase.__doc__,
    **section_fields("model"),
)
