"""compiler/export.py (light core): the host RAM of each way of merging, the mode the budget allows, and
what cannot be merged shard by shard."""

from pathlib import Path

import pytest

from qcompile.compiler.export import ExportPlan, Shard, _shard_problem, adapter_method
from qcompile.errors import UserError

MiB, GiB = 2**20, 2**30


def plan(budget: int, method: str = "lora", problem: str | None = None) -> ExportPlan:
    shards = [Shard("a.safetensors", 300 * MiB // 2, 0, {"w.weight": 10 * MiB}),
              Shard("b.safetensors", 500 * MiB // 2, 1024, {"v.weight": 20 * MiB, "e.weight": 100 * MiB})]
    return ExportPlan(spec_file=Path("s.yaml"), base=Path("b"), adapter=Path("r"), out_dir=Path("o"), method=method,
                      dtype="bfloat16", quantized=None, params=400 * MiB, shards=shards, budget=budget,
                      adapter_bytes=8 * MiB, shard_problem=problem, targets=("w.weight", "v.weight"))


def test_figures_follow_the_parameter_count_and_the_largest_shard():
    p = plan(64 * GiB)
    assert p.weight_bytes == 800 * MiB  # 400M bfloat16 parameters
    assert p.largest_shard_bytes == 500 * MiB + 1024
    assert p.merge_transient_bytes == 20 * MiB * 4  # the largest ADAPTED weight, not the embedding
    assert plan(64 * GiB, "dora").merge_transient_bytes == 4 * p.merge_transient_bytes
    assert p.in_memory_bytes == 800 * MiB + 16 * MiB + 80 * MiB + p.largest_shard_bytes + p.runtime
    assert p.by_shard_bytes == 2 * p.largest_shard_bytes + 80 * MiB + 8 * MiB + p.runtime


def test_auto_prefers_memory_then_shards_then_refuses_with_both_figures():
    p = plan(64 * GiB)
    assert p.choose("auto") == "memory"
    p = plan(plan(0).by_shard_bytes)
    assert p.choose("auto") == "shards"
    with pytest.raises(UserError, match="merging in memory needs 2.4 GiB") as exc:
        p.choose("memory")
    assert "--mode shards" in exc.value.hint
    with pytest.raises(UserError, match=r"in memory 2\.4 GiB .*shard by shard 2\.1 GiB"):
        plan(plan(0).by_shard_bytes - 1).choose("auto")
    with pytest.raises(UserError, match="cannot merge shard by shard: the adapter uses"):
        plan(64 * GiB, problem="the adapter uses x").choose("shards")
    assert plan(64 * GiB, problem="the adapter uses x").choose("auto") == "memory"


def test_methods_and_what_only_peft_can_merge():
    assert adapter_method({"peft_type": "LORA"}, Path("c")) == "lora"
    assert adapter_method({"peft_type": "LORA", "use_rslora": True}, Path("c")) == "rslora"
    assert adapter_method({"peft_type": "LORA", "use_dora": True}, Path("c")) == "dora"
    assert adapter_method({"peft_type": "ADALORA"}, Path("c")) == "adalora"
    for kind in ("IA3", "PROMPT_TUNING", None):
        with pytest.raises(UserError, match="cannot be merged by qcompile export"):
            adapter_method({"peft_type": kind}, Path("c"))
    assert _shard_problem({"peft_type": "ADALORA", "rank_pattern": {"x": [True]}}) is None
    assert "rank_pattern" in _shard_problem({"peft_type": "LORA", "rank_pattern": {"x": 4}})
    assert "modules_to_save" in _shard_problem({"peft_type": "LORA", "modules_to_save": ["lm_head"]})
    assert "biases" in _shard_problem({"peft_type": "LORA", "bias": "all"})
    assert _shard_problem({"peft_type": "LORA", "bias": "none", "modules_to_save": None}) is None
