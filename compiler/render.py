"""render: Jinja templates in a sandbox, with StrictUndefined, fed plain data only.

Templates give structure; spec values never reach them as code. Only str/int/bool/None and lists or
dicts of those may enter a context, so no capable object (a Path, a pydantic model) is reachable."""

from __future__ import annotations

import ast
from functools import lru_cache
from importlib import resources

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

_PLAIN = (str, int, float, bool, type(None))


def _check_plain(value: object, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k, where)
            _check_plain(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(f"template context {where} holds a {type(value).__name__}; pass plain data")


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    folder = resources.files("qcompile.templates")
    return ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(folder)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, context: dict) -> str:
    _check_plain(context, "context")
    return environment().get_template(template).render(**context)


def render_python(template: str, context: dict) -> str:
    """Render a Python file and prove it parses before anything is written."""
    source = render(template, context)
    ast.parse(source, filename=template)
    return source
