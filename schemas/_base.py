"""The base every spec section shares: unknown keys are errors, numbers are finite and never booleans,
and path strings fit what the operating system accepts."""

from __future__ import annotations

import functools
import typing
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

# The largest integer any consumer (JSON readers in C, numpy seeds, torch) is sure to hold.
MAX_INT = 2**63 - 1
PATH_MAX, NAME_MAX = 4096, 255  # Linux limits: a whole path, and one component, in bytes


def _takes_bool(annotation) -> bool:
    return annotation is bool or any(_takes_bool(a) for a in typing.get_args(annotation))


def _takes_number(annotation) -> bool:
    return annotation in (int, float) or any(_takes_number(a) for a in typing.get_args(annotation))


class Section(BaseModel):
    # defer_build: a section's validator is built when first used, as part of the Spec's, not at import
    # (a cold `qcompile validate` then builds one validator instead of one per section and backend).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=False, allow_inf_nan=False,
                              defer_build=True)

    @model_validator(mode="wrap")
    @classmethod
    def _numbers_are_numbers(cls, data: object, handler):
        # pydantic reads true as 1; in a spec that is always a typo (`r: true`), never a number.
        # Reported together with the section's other errors, so every mistake shows at once.
        mine = _number_errors(cls, data)
        try:
            result = handler(data)
        except ValidationError as exc:
            if not mine:
                raise
            keys = {e["loc"][0] for e in mine}
            mine += [_again(e) for e in exc.errors(include_url=False) if not e["loc"] or e["loc"][0] not in keys]
            raise ValidationError.from_exception_data(cls.__name__, mine) from None
        if mine:
            raise ValidationError.from_exception_data(cls.__name__, mine)
        return result


@functools.cache
def _number_fields(cls: type[BaseModel]) -> dict[str, bool]:
    """The section's number fields (name -> also takes a boolean), worked out once per class."""
    return {name: _takes_bool(field.annotation) for name, field in cls.model_fields.items()
            if _takes_number(field.annotation) and not _parses_itself(field)}


def _number_errors(cls: type[BaseModel], data: object) -> list:
    errors = []
    numbers = _number_fields(cls)
    for key, value in (data.items() if isinstance(data, dict) else ()):
        takes_bool = numbers.get(key) if isinstance(key, str) else None
        if takes_bool is None:
            continue
        if isinstance(value, bool) and not takes_bool:
            errors.append(_error("bool_not_number", "must be a number, not a boolean", key, value))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            errors.append(_error("number_too_large", "is too large (at most 2**63 - 1)", key, 0))
    return errors


def _parses_itself(field) -> bool:
    """Types such as ByteSize read their own input (and say why a boolean is no size)."""
    return any(isinstance(m, BeforeValidator) for m in field.metadata)


def _error(kind: str, message: str, key: str, value: object):
    return InitErrorDetails(type=PydanticCustomError(kind, message), loc=(key,), input=value)


def _again(err: dict):
    """An error pydantic reported, in the form ValidationError.from_exception_data takes back."""
    ctx = err.get("ctx")
    message = err["msg"].replace("{", "{{").replace("}", "}}") if ctx else err["msg"]
    return InitErrorDetails(type=PydanticCustomError(err["type"], message, ctx), loc=err["loc"], input=err["input"])


def check_path(value: str) -> str:
    """A path the operating system can open: no NUL byte, not longer than PATH_MAX, no component longer
    than NAME_MAX (otherwise every later step fails with `File name too long`)."""
    if "\x00" in value:
        raise ValueError("a path cannot contain a NUL character")
    if len(value.encode("utf-8", "surrogateescape")) > PATH_MAX:
        raise ValueError(f"path is longer than {PATH_MAX} bytes")
    longest = max((len(p.encode("utf-8", "surrogateescape")) for p in value.split("/")), default=0)
    if longest > NAME_MAX:
        raise ValueError(f"a path component is longer than {NAME_MAX} bytes (file name too long)")
    return value


PathStr = Annotated[str, Field(min_length=1), AfterValidator(check_path)]
