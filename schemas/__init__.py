"""The spec language: Pydantic models, one module per section. Imports no torch."""

from .backend import BACKEND_KINDS, BackendSpec
from .spec import Spec
from .units import format_bytes, parse_bytes

__all__ = ["BACKEND_KINDS", "BackendSpec", "Spec", "format_bytes", "parse_bytes"]
