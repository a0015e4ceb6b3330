"""The data file is checked before anything starts; the first non-UTF-8 line is named exactly."""

import pytest

from qcompile.compiler import data_checks
from qcompile.compiler.data_checks import _first_bad_line


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
def test_the_first_bad_line_is_found_across_chunk_boundaries(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(data_checks, "CHUNK", chunk)
    path = tmp_path / "d.jsonl"
    path.write_bytes("é\nline two\n{\"a\": \"ü\"}\nbad \xff here\n".encode("latin-1").replace(b"\xe9", "é".encode()))
    with open(path, "rb") as fh:
        assert _first_bad_line(fh) == 3  # ü written as latin-1 is not UTF-8


def test_a_truncated_multibyte_character_at_the_end_is_bad(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"ok\n" + "é".encode()[:1])
    with open(path, "rb") as fh:
        assert _first_bad_line(fh) == 2


def test_valid_utf8_is_fine(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes("ünïcödé\n".encode() * 1000)
    with open(path, "rb") as fh:
        assert _first_bad_line(fh) is None
