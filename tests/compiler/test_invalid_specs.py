"""Each invalid spec in tests/specs/invalid/ produces exactly the diagnostics in its .err file."""

from pathlib import Path

import pytest

from qcompile.compiler.diagnostics import SpecError
from qcompile.compiler.load import load_spec
from tests.conftest import TESTS, compare_golden

INVALID = TESTS / "specs" / "invalid"
CASES = sorted(p.stem for p in INVALID.glob("*.yaml"))


def diagnostics_text(name: str) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(Path(f"{name}.yaml"))
    return "\n".join(d.text() for d in info.value.diagnostics) + "\n"


@pytest.mark.parametrize("case", CASES)
def test_invalid_spec_diagnostics(case, monkeypatch, update_golden):
    monkeypatch.chdir(INVALID)
    compare_golden(INVALID / f"{case}.err", diagnostics_text(case), update_golden)


def test_diagnostics_are_sorted_by_position(monkeypatch):
    monkeypatch.chdir(INVALID)
    with pytest.raises(SpecError) as info:
        load_spec(Path("out_of_range.yaml"))
    lines = [(d.line, d.col) for d in info.value.diagnostics]
    assert lines == sorted(lines) and len(lines) >= 8
