"""Read YAML into plain data while remembering where every key and value came from.

PyYAML alone loses positions, accepts duplicate keys and expands alias bombs; this module parses the
event stream first (bounded depth and size, no recursion), then walks the composed nodes itself.
libyaml's parser (PyYAML's C extension) does both passes when it is there, ~10x faster than the pure-Python
one; a file it rejects, or that holds characters only the Python reader refuses, is parsed again in pure
Python, so every diagnostic stays the same."""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from .diagnostics import Diagnostic, KeyPath, SpecError, error

MAX_DEPTH = 32  # a spec is 3 levels deep; anything far deeper is junk or an attack
MAX_EVENTS = 100_000
MAX_EXPANDED_NODES = 20_000  # aliases included, counted each time they are used
CONTEXT_LINES = 2
PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
FAST_LOADER = getattr(yaml, "CSafeLoader", None)
# The constructors of the tags a spec's values have; called directly, without construct_object's bookkeeping.
PLAIN_SCALARS = {f"tag:yaml.org,2002:{t}": yaml.SafeLoader.yaml_constructors[f"tag:yaml.org,2002:{t}"]
                 for t in ("str", "int", "float", "bool", "null")}
NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE


class YamlError(SpecError):
    """A spec that is not YAML qcompile reads; the loader places its one diagnostic in the file."""

    def __init__(self, diagnostic: Diagnostic):
        self.diagnostic = diagnostic
        super().__init__([diagnostic])


@dataclass
class Positions:
    """1-based (line, col) of each value node and each key, by key path."""

    values: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)

    def of_value(self, path: KeyPath) -> tuple[int, int]:
        """The value's position, or that of the nearest enclosing node that exists."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.values:
                return self.values[path[:n]]
        return (1, 1)

    def of_key(self, path: KeyPath) -> tuple[int, int]:
        return self.keys.get(path) or self.of_value(path)


def _pos(mark) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1)


def _snippet(text: str, line: int, col: int) -> tuple[str, ...]:
    """The numbered lines around a syntax error, with a caret under the column."""
    lines = text.splitlines() or [""]
    line = min(line, len(lines))
    start, end = max(1, line - CONTEXT_LINES), min(len(lines), line + CONTEXT_LINES)
    width = len(str(end))
    out = []
    for n in range(start, end + 1):
        out.append(f"{n:>{width}} | {lines[n - 1][:200]}")
        if n == line:
            out.append(f"{'':>{width}} | {' ' * (col - 1)}^")
    return tuple(out)


def _fail(text: str, line: int, col: int, message: str, code: str, hint: str | None = None) -> YamlError:
    diag = error((), message, code, hint).at(None, line, col)
    if code == "yaml_syntax":
        diag = Diagnostic(diag.severity, (), message, code, hint, None, line, col, _snippet(text, line, col))
    return YamlError(diag)


def _check_events(text: str, loader=yaml.SafeLoader) -> None:
    """Walk the event stream (iteratively) to refuse deep nesting and oversized input before composing."""
    depth = events = documents = 0
    for event in yaml.parse(text, Loader=loader):
        events += 1
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                line, col = _pos(event.start_mark)
                raise _fail(text, line, col, f"nesting deeper than {MAX_DEPTH} levels", "yaml_too_deep")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                line, col = _pos(event.start_mark)
                raise _fail(text, line, col, "a spec file holds one YAML document", "yaml_multiple_documents",
                            "put each spec in its own file")
        if events > MAX_EVENTS:
            raise _fail(text, 1, 1, "the file is too large to be a spec", "yaml_too_large")


def _shallow(text: str) -> bool:
    """Whether the text provably stays within MAX_DEPTH and MAX_EVENTS, so libyaml may compose it without the
    event pass. Bounds: a block collection nested in another starts on a later line at least one column further
    in (a sequence may share its key's column: two levels per column), or on the same line after a `- ` or `? `
    (a sequence, then a mapping: two levels each); a flow collection needs a bracket; an event a character or two."""
    if len(text) > MAX_EVENTS // 4:
        return False
    block = max(2 * (len(line) - len(line.lstrip(" ")) + 1 + line.count("-") + line.count("?"))
                for line in text.split("\n"))
    return block + text.count("[") + text.count("{") <= MAX_DEPTH


class _SlowPath(Exception):
    """The libyaml parse cannot give the Python parser's positions for this text; parse it again in Python."""


class _Walker:
    """Turns composed nodes into dicts, lists and scalars, recording positions and refusing duplicates."""

    def __init__(self, text: str, fast: bool = False):
        self.text = text
        self.fast = fast
        self.positions = Positions()
        self.expanded = 0
        self.scalars = yaml.SafeLoader("")

    def walk(self, node: yaml.Node, path: KeyPath):
        self.expanded += 1
        if self.expanded > MAX_EXPANDED_NODES:
            line, col = _pos(node.start_mark)
            raise _fail(self.text, line, col, "aliases expand to too many nodes", "yaml_alias_bomb",
                        "a spec needs no repeated anchors; write the values out")
        self.positions.values.setdefault(path, _pos(node.start_mark))
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in PLAIN_TAGS:
            line, col = _pos(node.start_mark)
            raise _fail(self.text, line, col, f"YAML tag {node.tag} is not allowed in a spec", "yaml_value")
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, path + (i,)) for i, item in enumerate(node.value)]
        if self.fast and not node.value and not node.style:
            raise _SlowPath  # `key:` with no value: libyaml marks it at the next token, Python after the key
        build = PLAIN_SCALARS.get(node.tag)
        try:
            return build(self.scalars, node) if build else self.scalars.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            raise self._unreadable(node, exc) from None

    def _unreadable(self, node: yaml.Node, exc: Exception) -> YamlError:
        """PyYAML's constructors raise for unknown tags, bad merges and unreadable numbers: a diagnostic."""
        line, col = _pos(node.start_mark)
        problem = getattr(exc, "problem", None) or str(exc)
        return _fail(self.text, line, col, f"cannot read this value: {problem}", "yaml_value")

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict:
        try:
            self.scalars.flatten_mapping(node)  # `<<: *base` merge keys
        except yaml.YAMLError as exc:
            raise self._unreadable(node, exc) from None
        out: dict = {}
        for key_node, value_node in node.value:
            line, col = _pos(key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode):
                raise _fail(self.text, line, col, "a key must be a plain name", "yaml_complex_key")
            if self.fast and not key_node.value and not key_node.style:
                raise _SlowPath
            try:
                key = self.scalars.construct_object(key_node)
            except (yaml.YAMLError, ValueError, OverflowError) as exc:
                raise self._unreadable(key_node, exc) from None
            if not isinstance(key, str):
                key = str(key_node.value)
            if key in out:
                first = self.positions.keys[path + (key,)]
                raise _fail(self.text, line, col, f"duplicate key '{key}' (first defined at line {first[0]})",
                            "yaml_duplicate_key", "remove one of the two")
            self.positions.keys[path + (key,)] = (line, col)
            out[key] = self.walk(value_node, path + (key,))
        return out


def _compose_fast(text: str) -> yaml.Node | None | bool:
    """The document's node (None when empty) through libyaml, or False when only the Python parser may answer:
    an error (its message and mark differ), characters only the Python reader refuses, or a tab (the Python
    scanner refuses some that libyaml allows)."""
    if FAST_LOADER is None or "\t" in text or NON_PRINTABLE.search(text):
        return False
    try:
        if not _shallow(text):
            _check_events(text, FAST_LOADER)
        return yaml.compose(text, Loader=FAST_LOADER)
    except (yaml.YAMLError, YamlError):
        return False


def _compose(text: str) -> yaml.Node | None:
    try:
        _check_events(text)
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = _pos(mark) if mark else (1, 1)
        raise _fail(text, line, col, f"invalid YAML: {exc.problem or exc.context}", "yaml_syntax") from None
    except yaml.YAMLError as exc:  # reader errors: control characters, bad encodings
        mark = getattr(exc, "position", None)
        line, col = (1, 1)
        if isinstance(mark, int):
            line = text.count("\n", 0, mark) + 1
            col = mark - (text.rfind("\n", 0, mark) + 1) + 1
        raise _fail(text, line, col, "invalid YAML: the file holds characters YAML does not allow",
                    "yaml_syntax") from None


def _walk(text: str, node: yaml.Node | None, fast: bool) -> tuple[object, Positions]:
    if node is None:
        raise _fail(text, 1, 1, "the spec is empty", "spec_empty", "start from examples/ or `qcompile schema`")
    walker = _Walker(text, fast)
    try:
        data = walker.walk(node, ())
    except RecursionError:
        raise _fail(text, 1, 1, "nesting too deep", "yaml_too_deep") from None
    return data, walker.positions


def read_yaml(text: str) -> tuple[object, Positions]:
    """Parse one YAML document; raise YamlError carrying a positioned diagnostic."""
    node = _compose_fast(text)
    if node is not False:
        try:
            return _walk(text, node, fast=True)
        except (_SlowPath, YamlError):  # every diagnostic comes from the Python parser's nodes
            pass
    return _walk(text, _compose(text), fast=False)
