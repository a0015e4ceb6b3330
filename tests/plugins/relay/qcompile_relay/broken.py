"""An entry point whose module fails to import."""

import qcompile_relay_missing_dependency  # noqa: F401

BACKEND = None
