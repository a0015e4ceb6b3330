"""`lora:` the adapters peft injects."""

from typing import Annotated

from pydantic import Field, WithJsonSchema, WrapValidator, create_model

from qcompile.strategies import section_fields

from ._base import Section

MAX_LAYERS = 1024  # decoder layers; the largest real models have about 130
ALL_LINEAR = "all-linear"
NAMES_SCHEMA = {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 64}


def _all_linear(value, handler):
    """The one string target_modules takes; anything else is validated (and reported) as a list."""
    return value if value == ALL_LINEAR else handler(value)


TargetModules = Annotated[
    list[str],
    Field(min_length=1, max_length=64),
    WrapValidator(_all_linear),
    WithJsonSchema({"anyOf": [NAMES_SCHEMA, {"const": ALL_LINEAR}]}),
]


class _LoraSpecBase(Section):
    r: int = Field(16, gt=0, le=65_536, description="Rank of each adapter's A and B matrices.")
    alpha: float = Field(32, gt=0, le=1_000_000, description="Scaling numerator: the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input, in [0, 1).")
    target_modules: TargetModules = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description='Names of the Linear modules that get adapters (e.g. q_proj, gate_proj), or "all-linear": '
        "every Linear of the decoder layers except the head (resolved against the architecture).",
    )
    layers: list[Annotated[int, Field(ge=0, le=MAX_LAYERS)]] | None = Field(
        None,
        min_length=1,
        max_length=MAX_LAYERS,
        description="Decoder layer indices that get adapters (selective adapters); null = every layer.",
    )


LoraSpec = create_model(
    "LoraSpec",
    __base__=_LoraSpecBase,
    __doc__=_LoraSpecBase.__doc__,
    **section_fields("lora"),
)
