"""render: Jinja templates in a sandbox, with StrictUndefined, fed plain data only.

Templates give structure; spec values never reach them as code. Only str/int/bool/None and lists or
dicts of those may enter a context, so no capable object (a Path, a pydantic model) is reachable."""

from __future__ import annotations

import ast
from functools import lru_cache
from importlib import resources

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from . import script

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


def _script_part_source(name: str) -> tuple[str, None, object]:
    """`{% include "script/<part>.py" %}` yields the part as train.py holds it, never read as Jinja; the
    compiled template lives as long as the part's parsed copy (script.read_part's cache)."""
    part = script.read_part(name.removesuffix(".py"))
    text = script.part_text(part.name)
    if "{% endraw %}" in text:
        raise script.ScriptPartError(f"script/{name} may not contain the text '{{% endraw %}}'")
    return "{% raw %}" + text + "{% endraw %}", None, lambda: script.read_part(part.name) is part


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    folder = resources.files("qcompile.templates")
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.ChoiceLoader([
            jinja2.PrefixLoader({"script": jinja2.FunctionLoader(_script_part_source)}),
            jinja2.FileSystemLoader(str(folder)),
        ]),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["script_imports"] = script.import_block
    return env


def render(template: str, context: dict) -> str:
    _check_plain(context, "context")
    return environment().get_template(template).render(**context)


def render_python(template: str, context: dict) -> str:
    """Render a Python file and prove it parses before anything is written."""
    source = render(template, context)
    ast.parse(source, filename=template)
    return source


def render_train_script(qcompile_version: str, backend: str, script_parts: list[str]) -> str:
    """train.py for a backend: the header, then its script parts (`core` first) as one module."""
    script_parts = script.assembled(script_parts)
    script.parts(script_parts)  # one clear error for an unknown, repeated or clashing part
    return render_python("train.py.j2", {"qcompile_version": qcompile_version, "backend": backend,
                                         "script_parts": list(script_parts)})
