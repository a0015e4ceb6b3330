"""compiler/merge.py: the merged model computes what base + adapter computes, for every method export
supports, and the shard-by-shard merge writes exactly the weights peft's merge_and_unload does."""

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from tests.compiler.export_fixtures import make_adapter, sharded_copy  # noqa: E402

METHODS = ("lora", "rslora", "dora", "adalora")


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module")
def sharded_base(model_dir, tmp_path_factory):
    """The tiny model saved in several safetensors shards (with an index), as large models are."""
    return sharded_copy(model_dir, tmp_path_factory.mktemp("sharded") / "base")


@pytest.mark.parametrize("method", METHODS)
def test_merged_logits_equal_base_plus_adapter_and_both_paths_agree(method, sharded_base, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from qcompile.compiler.merge import merge_by_shard, merge_in_memory

    adapter = make_adapter(sharded_base, tmp_path / "adapter", method)
    ids = torch.randint(0, 1000, (2, 24), generator=torch.Generator().manual_seed(1))
    base = AutoModelForCausalLM.from_pretrained(sharded_base, dtype=torch.float32)
    unmerged = logits(PeftModel.from_pretrained(base, adapter), ids)
    plain = logits(AutoModelForCausalLM.from_pretrained(sharded_base, dtype=torch.float32), ids)
    assert (unmerged - plain).abs().max() > 1e-3  # the adapter changes the output: the test can fail

    merge_in_memory(sharded_base, adapter, tmp_path / "memory", "float32")
    names = merge_by_shard(sharded_base, adapter, tmp_path / "shards", "float32")
    assert len([n for n in names if n.endswith(".safetensors")]) > 1
    in_memory = AutoModelForCausalLM.from_pretrained(tmp_path / "memory", dtype=torch.float32)
    by_shard = AutoModelForCausalLM.from_pretrained(tmp_path / "shards", dtype=torch.float32)
    assert torch.allclose(logits(in_memory, ids), unmerged, atol=1e-5, rtol=0)
    assert torch.allclose(logits(by_shard, ids), unmerged, atol=1e-5, rtol=0)
    memory_weights, shard_weights = in_memory.state_dict(), by_shard.state_dict()
    assert memory_weights.keys() == shard_weights.keys()
    for key, value in memory_weights.items():
        assert torch.equal(value, shard_weights[key]), key


def test_adalora_rank_pattern_is_honoured(sharded_base, tmp_path):
    """The saved AdaLoRA adapter is pruned (rank 4 of 8): the merge reads the pruned shapes."""
    from safetensors.torch import load_file

    adapter = make_adapter(sharded_base, tmp_path / "adapter", "adalora")
    shapes = {k: v.shape for k, v in load_file(adapter / "adapter_model.safetensors").items()}
    assert all(shape[0] == 4 for key, shape in shapes.items() if key.endswith("lora_A"))


def test_bfloat16_paths_agree_bit_for_bit(sharded_base, tmp_path):
    from safetensors.torch import load_file

    from qcompile.compiler.merge import merge_by_shard, merge_in_memory

    adapter = make_adapter(sharded_base, tmp_path / "adapter", "dora")
    merge_in_memory(sharded_base, adapter, tmp_path / "memory", "bfloat16")
    merge_by_shard(sharded_base, adapter, tmp_path / "shards", "bfloat16")
    memory = {}
    for path in (tmp_path / "memory").glob("*.safetensors"):
        memory.update(load_file(path))
    shards = {}
    for path in (tmp_path / "shards").glob("*.safetensors"):
        shards.update(load_file(path))
    assert memory.keys() == shards.keys()
    for key, value in memory.items():
        assert value.dtype == torch.bfloat16
        assert torch.equal(value, shards[key]), key


def test_an_adapter_for_another_model_is_reported(sharded_base, tmp_path):
    from safetensors.torch import load_file, save_file

    from qcompile.compiler.merge import merge_by_shard

    adapter = make_adapter(sharded_base, tmp_path / "adapter", "lora")
    weights = adapter / "adapter_model.safetensors"
    save_file({k.replace("layers.0.", "layers.9."): v for k, v in load_file(weights).items()}, str(weights))
    with pytest.raises(KeyError, match="layers.9"):
        merge_by_shard(sharded_base, adapter, Path(tmp_path / "out"), "float32")
