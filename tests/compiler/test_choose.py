"""`auto` and the planner's suggestions only name backends and changes the spec would be accepted with."""

from qcompile.backends import get_backend
from qcompile.compiler.checks import diagnose
from qcompile.compiler.choose import choose_backend, suggest_fixes
from qcompile.compiler.rules import accepts
from tests.compiler.planner.conftest import context, spec_from

SINGLE_NODE = {"naive-model-parallel", "accelerate-offload"}


def test_on_two_nodes_no_single_node_backend_is_chosen_or_suggested():
    spec = spec_from(**{"hardware.nodes": 2, "hardware.device_memory": "40GiB"})
    chosen, considered = choose_backend(context(spec))
    refused = {c.backend.kind for c in considered if c.refused}
    assert refused == SINGLE_NODE
    fixes = suggest_fixes(context(spec), get_backend("deepspeed-zero3"), limit=10)
    assert fixes and not {f.backend for f in fixes} & SINGLE_NODE
    for fix in fixes:
        assert not fix.change.startswith(tuple(f"backend: {k}" for k in SINGLE_NODE))


def test_every_suggested_backend_accepts_the_spec():
    spec = spec_from(**{"backend": "deepspeed-zero2", "strategies.offload": {"optimizer": "cpu", "params": "none"}})
    for fix in suggest_fixes(context(spec), get_backend("deepspeed-zero2"), limit=10):
        assert fix.backend != "naive-model-parallel"  # it refuses optimizer offload


def test_auto_with_nothing_usable_lists_every_backend_and_why():
    spec = spec_from(**{"hardware.nodes": 2, "hardware.device_memory": "4GiB"})
    errors = [d for d in diagnose(context(spec))[0] if d.is_error]
    assert [d.code for d in errors] == ["memory_budget"]
    notes = dict(note.split(" ", 1) for note in errors[0].notes)
    assert notes["naive-model-parallel"].startswith("refuses the spec: naive-model-parallel trains one process")
    assert notes["deepspeed-zero2:"].startswith("16 devices (worst: rank 0) needs 148.8 GiB")


def test_accepts_is_empty_for_an_acceptable_spec():
    assert accepts(spec_from(backend="deepspeed-zero3"), get_backend("deepspeed-zero3")) == []
