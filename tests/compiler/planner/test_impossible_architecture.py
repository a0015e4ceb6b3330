"""config.json sizes no model can have are the user's error (file and key), never a crash or a hang."""

import json
import time

import pytest

from qcompile.compiler.planner.architecture import Architecture, ArchitectureInvalid
from tests.conftest import TESTS

CONFIG = json.loads((TESTS / "specs" / "models" / "tiny-qwen2" / "config.json").read_text())


@pytest.mark.parametrize("change, key", [
    ({"hidden_size": 0}, "hidden_size"),
    ({"hidden_size": -64}, "hidden_size"),
    ({"num_attention_heads": 0}, "num_attention_heads"),
    ({"num_attention_heads": 5}, "num_attention_heads"),  # 64 is not divisible by 5
    ({"num_key_value_heads": 3}, "num_key_value_heads"),
    ({"num_key_value_heads": 8}, "num_key_value_heads"),  # more kv heads than heads
    ({"num_hidden_layers": 10**9}, "num_hidden_layers"),
    ({"vocab_size": 0}, "vocab_size"),
    ({"intermediate_size": 1.5}, "intermediate_size"),
    ({"hidden_size": True}, "hidden_size"),
    ({"head_dim": 0}, "head_dim"),
])
def test_impossible_sizes_name_the_file_and_key(change, key):
    started = time.monotonic()
    with pytest.raises(ArchitectureInvalid) as info:
        Architecture.from_config({**CONFIG, **change}, "cfg.json")
    assert time.monotonic() - started < 1
    assert info.value.key == key and info.value.message.startswith(f"cfg.json: {key}: ")


def test_a_missing_size_is_named():
    config = {k: v for k, v in CONFIG.items() if k != "vocab_size"}
    with pytest.raises(ArchitectureInvalid, match="vocab_size: missing"):
        Architecture.from_config(config, "cfg.json")


def test_head_dim_may_differ_from_hidden_over_heads():
    arch = Architecture.from_config({**CONFIG, "num_attention_heads": 6, "head_dim": 32}, "cfg.json")
    assert arch.q_dim == 192
