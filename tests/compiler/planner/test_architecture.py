import json
import subprocess
import sys

import pytest

from qcompile.compiler.planner import ArchitectureUnknown, resolve_architecture
from qcompile.compiler.planner.architecture import Architecture
from qcompile.compiler.planner.resolve import catalog

from .conftest import EXAMPLE, spec_from


def test_qwen15_72b_from_catalog(qwen72b):
    arch = resolve_architecture(qwen72b, EXAMPLE.parent)
    assert (arch.hidden_size, arch.intermediate_size, arch.num_layers) == (8192, 24576, 80)
    assert (arch.num_heads, arch.num_kv_heads, arch.vocab_size) == (64, 64, 152064)
    assert not arch.tie_word_embeddings and arch.qkv_bias
    assert arch.num_params() == 72_287_920_128
    assert arch.linear_modules()["q_proj"] == (8192, 8192)
    assert "huggingface.co/Qwen/Qwen1.5-72B" in arch.source


def test_every_catalog_entry_cites_a_source_and_parses():
    for name, config in catalog().items():
        assert config["source"].startswith("https://huggingface.co/"), name
        arch = Architecture.from_config(config, name)
        assert arch.num_params() > 0


def test_model_config_path_wins_and_is_relative_to_spec_dir(tmp_path):
    (tmp_path / "cfg").mkdir()
    config = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100}
    (tmp_path / "cfg" / "config.json").write_text(json.dumps(config))
    spec = spec_from(**{"model.config": "cfg/config.json"})
    arch = resolve_architecture(spec, tmp_path)
    assert arch.num_layers == 3 and arch.num_kv_heads == 2 and not arch.qkv_bias


def test_local_model_directory(tmp_path):
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "torch_dtype": "float32"}))
    arch = resolve_architecture(spec_from(**{"model.name": "tiny"}), tmp_path)
    assert arch.num_layers == 2 and arch.checkpoint_dtype == "float32"


def test_hf_cache_config_only(tmp_path, monkeypatch):
    snap = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("abc123")
    (snap / "config.json").write_text(json.dumps({
        "model_type": "mistral", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 5,
        "num_attention_heads": 4, "vocab_size": 50}))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    arch = resolve_architecture(spec_from(**{"model.name": "acme/tiny"}), tmp_path)
    assert arch.num_layers == 5 and arch.num_kv_heads == 4


def test_unknown_model_says_pass_model_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ArchitectureUnknown) as info:
        resolve_architecture(spec_from(**{"model.name": "acme/unknown-7b"}), tmp_path)
    assert "model.config" in info.value.hint


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", json.dumps({"model_type": "qwen2"})])
def test_bad_config_is_a_clear_error(tmp_path, content):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(ArchitectureUnknown):
        resolve_architecture(spec_from(**{"model.config": "config.json"}), tmp_path)


def test_planner_imports_no_torch():
    code = "import qcompile.compiler.planner, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", [
    "qwen/qwen1.5-0.5b", "qwen/qwen1.5-72b", "qwen/qwen2-1.5b", "qwen/qwen2.5-7b",
    "meta-llama/llama-2-7b-hf", "meta-llama/meta-llama-3-8b", "meta-llama/llama-3.2-1b",
    "mistralai/mistral-7b-v0.1",
])
def test_param_count_equals_transformers_meta_model(name):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = {k: v for k, v in catalog()[name].items() if k != "source"}
    arch = Architecture.from_config(config, name)
    hf_config = transformers.AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf_config)
    assert arch.num_params() == sum(p.numel() for p in model.parameters())
    layer = dict(model.model.layers[0].named_modules())
    for module, (fan_in, fan_out) in arch.linear_modules().items():
        linear = next(m for n, m in layer.items() if n.endswith(module))
        assert (linear.in_features, linear.out_features) == (fan_in, fan_out)
