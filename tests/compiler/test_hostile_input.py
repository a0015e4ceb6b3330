"""Malformed input of any kind gets a diagnostic, never a Python exception."""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qcompile.compiler.diagnostics import SpecError
from qcompile.compiler.load import load_spec

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


def codes(tmp_path, content: bytes | str) -> list[str]:
    path = tmp_path / "spec.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert all(d.file == str(path) for d in info.value.diagnostics)
    return [d.code for d in info.value.diagnostics]


@pytest.mark.parametrize(
    "content, code",
    [
        (b"", "spec_empty"),
        (b"   \n# only a comment\n", "spec_empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "spec_not_text"),
        ("\x00\x01\x02 binary", "yaml_syntax"),
        ("- a\n- b\n", "spec_not_mapping"),
        ("just a string", "spec_not_mapping"),
        ("[" * 5000, "yaml_too_deep"),
        ("a:\n" + "".join("  " * i + "b:\n" for i in range(1, 60)), "yaml_too_deep"),
        (BOMB, "yaml_alias_bomb"),
        ("version: 1\nmodel: !!python/object/apply:os.system ['echo hi']\n", "yaml_value"),
        ("a: 1\n---\nb: 2\n", "yaml_multiple_documents"),
        ("? [a, b]\n: 1\n", "yaml_complex_key"),
        ("a: b: c\n", "yaml_syntax"),
    ],
)
def test_malformed_input_is_a_diagnostic(tmp_path, content, code):
    assert code in codes(tmp_path, content)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path)
    assert info.value.diagnostics[0].code == "spec_unreadable"
    assert "directory" in info.value.diagnostics[0].message


def test_missing_file(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "nope.yaml")
    assert "no such file" in info.value.diagnostics[0].message


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("version: 1\n")
    path.chmod(0)
    with pytest.raises(SpecError):
        load_spec(path)


def test_huge_file(tmp_path):
    assert codes(tmp_path, "a: " + "x" * 2_000_000) == ["spec_unreadable"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300),
                 st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
                              lambda kids: st.lists(kids, max_size=4)
                              | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                              max_leaves=20).map(repr)))
def test_fuzz_any_input_gives_spec_or_diagnostic(tmp_path, content):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    try:
        load_spec(path)
    except SpecError as exc:
        assert exc.diagnostics and all(d.line is None or d.line >= 1 for d in exc.diagnostics)
