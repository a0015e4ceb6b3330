"""Memory sizes written the way people write them ("80GiB", "1007GB") and kept as bytes."""

import re
from typing import Annotated

from pydantic import BeforeValidator, Field, PlainSerializer

UNITS = {
    "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
}
MAX_BYTES = 2**60  # 1 EiB: larger than any device, host or disk a spec can describe
_SIZE = re.compile(r"^\s*(?P<num>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[A-Za-z]*)\s*$")


def parse_bytes(value: object) -> int:
    """Parse "80GiB", "1007 GB" or a plain integer of bytes; raise ValueError with what is allowed."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 80GiB, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a memory size cannot be negative")
        return _bounded(value)
    if isinstance(value, float):
        raise ValueError("write a size with a unit, such as 80GiB, or a whole number of bytes")
    if not isinstance(value, str):
        raise ValueError("expected a size such as 80GiB")
    if value.strip().startswith("-"):
        raise ValueError("a memory size cannot be negative")
    match = _SIZE.match(value) if len(value) <= 64 else None
    if not match:
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise ValueError(f"cannot read {shown!r} as a size; write e.g. 80GiB or 1007GB")
    unit = match["unit"].upper() or "B"
    if unit not in UNITS:
        allowed = ", ".join(["B", "KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB"])
        raise ValueError(f"unknown unit {match['unit']!r}; use one of {allowed}")
    return _bounded(round(float(match["num"]) * UNITS[unit]))


def _bounded(n: int) -> int:
    if n > MAX_BYTES:
        raise ValueError("larger than 1 EiB; write the size of one device, node or disk")
    return int(n)


def format_bytes(n: float) -> str:
    """Binary units, as memory tools print them: 134.6 GiB."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


# The JSON Schema form of what parse_bytes accepts, so editors flag what the loader would refuse.
SIZE_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*([bB]|[kKmMgGtT][iI]?[bB])?\s*$"


def _size_json_schema(schema: dict) -> None:
    schema.pop("type", None)
    schema["anyOf"] = [{"type": "string", "pattern": SIZE_PATTERN}, {"type": "integer", "minimum": 0}]
    schema["examples"] = ["80GiB", "1007GB"]


ByteSize = Annotated[
    int,
    BeforeValidator(parse_bytes),
    Field(json_schema_extra=_size_json_schema),
    PlainSerializer(int, return_type=int),
]
