"""`data:` the training set."""

from typing import Literal

from pydantic import Field

from ._base import PathStr, Section


class DataSpec(Section):
    path: PathStr = Field(description="JSON lines file; relative paths are read from the spec's folder.")
    format: Literal["alpaca", "chat", "text"] = Field(
        "alpaca",
        description="alpaca: instruction/input/output; chat: messages with roles; text: a text field. "
        "Loss is on the response only for alpaca and chat.",
    )
