"""The public Python API: `import qcompile` is cheap, validate never raises for a bad spec, plan returns plans."""

import subprocess
import sys

import pytest

import qcompile
from tests.conftest import REPO, TESTS

SPECS = TESTS / "specs"


def test_import_qcompile_loads_neither_pydantic_nor_yaml():
    code = ("import sys, qcompile; heavy = {'pydantic', 'yaml', 'click', 'torch'} & set(sys.modules);"
            "assert not heavy, heavy; assert callable(qcompile.validate); print('ok')")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "ok", result.stderr


def test_public_names():
    assert {"validate", "check", "plan", "Diagnostic", "SpecError", "FileReport"} <= set(dir(qcompile))
    assert qcompile.Diagnostic is __import__("qcompile.compiler.diagnostics").compiler.diagnostics.Diagnostic
    with pytest.raises(AttributeError):
        _ = qcompile.no_such_name


def test_validate_returns_every_diagnostic_and_never_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    diagnostics = qcompile.validate([SPECS / "deepspeed-zero2.yaml", SPECS / "invalid" / "unknown_keys.yaml",
                                     tmp_path / "missing.yaml", tmp_path / "empty"])
    assert all(isinstance(d, qcompile.Diagnostic) for d in diagnostics)
    by_file = {}
    for d in diagnostics:
        by_file.setdefault(d.file, []).append(d)
    assert not any(d.is_error for d in by_file.get(str(SPECS / "deepspeed-zero2.yaml"), []))
    assert any(d.code == "extra_forbidden" and d.line for d in by_file[str(SPECS / "invalid" / "unknown_keys.yaml")])
    assert [d.message for d in by_file[str(tmp_path / "missing.yaml")]] == ["no such file"]
    assert [d.code for d in by_file[str(tmp_path / "empty")]] == ["no_spec_found"]


def test_check_gives_one_report_per_file():
    reports = qcompile.check([SPECS], memory_check=False)
    names = [r.path.name for r in reports]
    assert "deepspeed-zero2.yaml" in names and "unknown_keys.yaml" in names  # folders are walked recursively
    assert {r.path.name: r.valid for r in reports}["deepspeed-zero2.yaml"] is True


def test_plan_returns_the_plan_of_the_specs_backend():
    (plan,) = qcompile.plan(SPECS / "deepspeed-zero2.yaml")
    assert plan.backend == "deepspeed-zero2" and plan.fits
    plans = qcompile.plan(SPECS / "deepspeed-zero2.yaml", backend="all")
    assert len(plans) > 1 and len({p.backend for p in plans}) == len(plans)


def test_plan_raises_spec_error_for_an_unknown_backend_or_a_bad_spec():
    with pytest.raises(qcompile.SpecError) as info:
        qcompile.plan(SPECS / "deepspeed-zero2.yaml", backend="nope")
    assert info.value.diagnostics[0].code == "unknown_backend"
    with pytest.raises(qcompile.SpecError):
        qcompile.plan(SPECS / "invalid" / "unknown_keys.yaml")


def test_a_file_named_twice_is_checked_once():
    spec = SPECS / "deepspeed-zero2.yaml"
    reports = qcompile.check([spec, SPECS, f"{SPECS}/./deepspeed-zero2.yaml"], memory_check=False)
    assert [r.path for r in reports].count(spec) == 1
