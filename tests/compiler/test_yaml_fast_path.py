"""libyaml (PyYAML's C parser) reads specs ~10x faster; it must give the same data, positions and diagnostics
as the pure-Python parser, which is what the diagnostics and the .err files were written against.

One known difference is allowed: libyaml reads a few malformed corner cases that the Python scanner refuses
(`key: |#`); then the fast path reads what libyaml reads. Every error is the Python parser's."""

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qcompile.compiler import yaml_source
from qcompile.compiler.yaml_source import YamlError, read_yaml
from tests.conftest import REPO, TESTS

pytestmark = pytest.mark.skipif(yaml_source.FAST_LOADER is None, reason="PyYAML built without libyaml")
FILES = sorted(TESTS.glob("specs/**/*.yaml")) + sorted((REPO / "examples").glob("*.yaml"))


def outcome(text: str):
    try:
        data, positions = read_yaml(text)
        return ("ok", data, positions.values, positions.keys)
    except YamlError as exc:
        return ("error", exc.diagnostic)


def both(text: str, monkeypatch):
    fast = outcome(text)
    with monkeypatch.context() as m:
        m.setattr(yaml_source, "FAST_LOADER", None)
        slow = outcome(text)
    return fast, slow


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_fast_and_pure_python_parsers_agree_on_every_spec(path, monkeypatch):
    fast, slow = both(path.read_text(), monkeypatch)
    assert fast == slow


@pytest.mark.parametrize("path", [p for p in FILES if "invalid" not in p.parts], ids=lambda p: p.name)
def test_valid_specs_take_the_fast_path(path, monkeypatch):
    def python_parser(text):
        raise AssertionError("parsed again by the Python parser")

    monkeypatch.setattr(yaml_source, "_compose", python_parser)
    data, _ = read_yaml(path.read_text())
    assert data == yaml.safe_load(path.read_text())


YAMLISH = st.lists(st.sampled_from(["a", "b", ":", " ", "\n", "-", "[", "]", "{", "}", ",", "&x", "*x", "!!str",
                                    "'", '"', "#", "\t", "1e-4", "no", "~", "? ", "|", "\u00e9", "\x07", "---"]),
                   max_size=40).map("".join)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(YAMLISH)
def test_fast_and_pure_python_parsers_agree_on_any_text(monkeypatch, text):
    fast, slow = both(text, monkeypatch)
    if fast[0] == "ok" and slow[0] == "error":
        return  # libyaml's leniency, see the module docstring
    assert fast == slow


@pytest.mark.parametrize("text", ["- " * 40 + "x", "- " * 6000 + "x", "- - a:\n" * 1 + "    - - " * 20 + "x",
                                  "a:\n" + "".join("  " * i + "- b:\n" for i in range(1, 30))])
def test_deep_compact_nesting_is_refused_before_libyaml_composes_it(text):
    with pytest.raises(YamlError) as info:
        read_yaml(text)
    assert info.value.diagnostic.code == "yaml_too_deep"
