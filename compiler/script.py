"""script: read the generated train.py's parts (plain Python modules in templates/script/) and turn them
into the pieces the train.py.j2 template joins into one self-contained script.

In the repository the parts import each other (`from .core import STEPS`), so ruff and the tests read
them as ordinary modules. In train.py they are one module: a part's relative imports are dropped, the
parts' other imports are merged into one block at the top, and each part's docstring becomes a comment
above its code. A part may not import qcompile, so the script runs without it."""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from functools import cache
from importlib import resources

PART_NAME = re.compile(r"[a-z][a-z0-9_]*")
LINE_LENGTH = 120
BANNER = "# " + "=" * 64  # above each part; the parts mark their own sections with "# ----"
EVERY_JOB = ("rows", "data", "summary", "tracking")  # parts every job needs, placed right after core


class ScriptPartError(ValueError):
    """A part name or part source the renderer cannot assemble (a bug in a backend or a part)."""


@dataclass(frozen=True)
class Part:
    name: str
    doc: str
    imports: tuple[ast.Import | ast.ImportFrom, ...]  # absolute imports only
    body: str  # the source after the imports
    defines: frozenset[str]  # top-level names the part binds


def part_folder():
    return resources.files("qcompile.templates") / "script"


def known_parts() -> list[str]:
    names = (f.name.removesuffix(".py") for f in part_folder().iterdir() if f.name.endswith(".py"))
    return sorted(n for n in names if PART_NAME.fullmatch(n))


@cache
def read_part(name: str) -> Part:
    file = part_folder() / f"{name}.py"
    if not PART_NAME.fullmatch(name) or not file.is_file():
        raise ScriptPartError(f"no script part {name!r}; known: {', '.join(known_parts())}")
    source = file.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=f"script/{name}.py")
    doc, imports, head_end, body_start = ast.get_docstring(tree) or "", [], 0, len(tree.body)
    for index, node in enumerate(tree.body):
        if index == 0 and doc:
            head_end = node.end_lineno
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if isinstance(node, ast.Import) or not node.level:  # `from .core import ...` is this same script
                imports.append(node)
            head_end = node.end_lineno
        else:
            body_start = index
            break
    for node in ast.walk(ast.Module(body=tree.body[body_start:], type_ignores=[])):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise ScriptPartError(f"script/{name}.py:{node.lineno}: relative imports go at the top of a part")
    for node in imports:
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        if any(m.split(".")[0] == "qcompile" for m in modules):
            raise ScriptPartError(f"script/{name}.py:{node.lineno}: a part may not import qcompile "
                                  "(train.py runs without it); import a sibling part with `from .part import`")
    body = "".join(source.splitlines(keepends=True)[head_end:]).strip("\n") + "\n"
    return Part(name, doc, tuple(imports), body, frozenset(_top_level_names(tree.body[body_start:])))


def _top_level_names(nodes: list[ast.stmt]):
    for node in nodes:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                elements = target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]
                yield from (e.id for e in elements if isinstance(e, ast.Name))  # not `STEPS.x = ...`


def parts(names: list[str]) -> list[Part]:
    """The named parts, checked to form one module: `core` first, each part once, no name bound twice."""
    if not names or names[0] != "core":
        raise ScriptPartError(f"script parts must start with 'core', got {names}")
    if len(set(names)) != len(names):
        raise ScriptPartError(f"script parts repeat a name: {names}")
    found, owner = [read_part(n) for n in names], {}
    for part in found:
        for defined in sorted(part.defines):
            if defined in owner:
                raise ScriptPartError(f"script parts {owner[defined]} and {part.name} both define {defined!r}")
            owner[defined] = part.name
    return found


def assembled(names: list[str]) -> list[str]:
    """A backend's parts with the parts every job needs (the data) inserted after `core`."""
    names = list(names)
    if not names or names[0] != "core":
        raise ScriptPartError(f"script parts must start with 'core', got {names}")
    return names[:1] + [n for n in EVERY_JOB if n not in names] + names[1:]


def part_text(name: str) -> str:
    """A part as train.py holds it: its docstring as a comment banner, then its code."""
    part = read_part(name)
    comment = "".join(f"# {line}".rstrip() + "\n" for line in part.doc.splitlines())
    return f"{BANNER} {name}\n{comment}\n\n{part.body}"


def import_block(names: list[str]) -> str:
    """Every import the parts make, merged: standard library first, then the rest, as isort orders them."""
    plain: set[tuple[str, str | None]] = set()
    members: dict[str, dict[str, str | None]] = {}
    for part in parts(list(names)):
        for node in part.imports:
            if isinstance(node, ast.Import):
                plain.update((a.name, a.asname) for a in node.names)
                continue
            names_from = members.setdefault(node.module, {})
            for alias in node.names:
                if names_from.get(alias.name, alias.asname) != alias.asname:
                    raise ScriptPartError(f"{part.name} imports {alias.name} from {node.module} under another name")
                names_from[alias.name] = alias.asname
    sections = []
    for stdlib in (True, False):
        lines = [f"import {_alias(m, a)}" for m, a in sorted(plain, key=_plain_order) if _is_stdlib(m) == stdlib]
        lines += [_from_line(m, members[m]) for m in sorted(members) if _is_stdlib(m) == stdlib]
        if lines:
            sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def _plain_order(item: tuple[str, str | None]) -> tuple[str, str]:
    return item[0], item[1] or ""


def _is_stdlib(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names


def _alias(name: str, asname: str | None) -> str:
    return f"{name} as {asname}" if asname else name


def _member_order(name: str) -> tuple[int, str]:
    """isort's order by type: CONSTANTS, then Classes, then functions and variables."""
    kind = 0 if name.isupper() and len(name) > 1 else 1 if name[0].isupper() else 2
    return kind, name


def _from_line(module: str, names: dict[str, str | None]) -> str:
    items = [_alias(n, names[n]) for n in sorted(names, key=_member_order)]
    line = f"from {module} import {', '.join(items)}"
    if len(line) <= LINE_LENGTH:
        return line
    return f"from {module} import (\n" + "".join(f"    {item},\n" for item in items) + ")"
