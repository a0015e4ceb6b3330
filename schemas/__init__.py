"""The spec language: Pydantic models, one module per section (the root is `schemas.spec.Spec`).
Imports no torch. The backend section is built from the backend registry, and the backends import
`_base` and `units` from here, so this package's own import stays that small."""

from .units import format_bytes, parse_bytes

__all__ = ["format_bytes", "parse_bytes"]
