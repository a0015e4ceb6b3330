"""`strategies:` the memory strategies of the seed article: one key per strategy object (strategies/)."""

from pydantic import create_model

from qcompile.strategies import section_fields

from ._base import Section

StrategiesSpec = create_model(
    "StrategiesSpec",
    __base__=Section,
    __doc__="The memory strategies; each key belongs to one strategy object.",
    **section_fields("strategies"),
)
