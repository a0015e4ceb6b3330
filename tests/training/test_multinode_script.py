"""The script parts a multi-node job relies on, in-process: portable paths in train_config.json and the
line that names a lost node."""

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from qcompile.templates.script import core, deepspeed  # noqa: E402


def write_config(folder, **paths):
    model = paths.get("model", "Qwen/Qwen2-0.5B")
    config = {"model": {"path": model, "tokenizer": model},
              "data": {"path": paths.get("data", "../data/train.jsonl")},
              "training": {"output_dir": paths.get("out", "/abs/out")}, "backend": {"kind": "x"}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train_config.json").write_text(json.dumps(config))
    return folder / "train_config.json"


def test_relative_paths_resolve_against_the_build_directory(tmp_path, monkeypatch):
    for name in ("QCOMPILE_MODEL_PATH", "QCOMPILE_DATA_PATH", "QCOMPILE_OUTPUT_DIR"):
        monkeypatch.delenv(name, raising=False)
    path = write_config(tmp_path / "proj" / "build", model="./model", out="../out")
    monkeypatch.chdir(tmp_path)  # not the build directory
    cfg = core.read_config(path)
    assert cfg["data"]["path"] == str(tmp_path / "proj" / "data" / "train.jsonl")
    assert cfg["model"]["path"] == cfg["model"]["tokenizer"] == str(tmp_path / "proj" / "build" / "model")
    assert cfg["training"]["output_dir"] == str(tmp_path / "proj" / "out")
    assert "offload_folder" not in cfg["backend"]
    hub = core.read_config(write_config(tmp_path / "b"))
    assert hub["model"]["path"] == "Qwen/Qwen2-0.5B" and hub["training"]["output_dir"] == "/abs/out"


def test_the_environment_overrides_paths_at_launch(tmp_path, monkeypatch):
    monkeypatch.setenv("QCOMPILE_MODEL_PATH", "/shared/models/m")
    monkeypatch.setenv("QCOMPILE_DATA_PATH", "/shared/data.jsonl")
    monkeypatch.setenv("QCOMPILE_OUTPUT_DIR", "/shared/out")
    cfg = core.read_config(write_config(tmp_path))
    assert cfg["model"]["path"] == cfg["model"]["tokenizer"] == "/shared/models/m"
    assert cfg["data"]["path"] == "/shared/data.jsonl" and cfg["training"]["output_dir"] == "/shared/out"


GLOO_RESET = ("[../gloo/transport/tcp/pair.cc:537] Read error [10.0.0.7]:48612: Connection reset by peer. "
              "This is typically caused by a remote worker hanging")


def test_a_failed_collective_names_the_lost_node():
    two = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1", "NODE_RANK": "0"}
    assert deepspeed.lost_node_message(RuntimeError(GLOO_RESET), two) == (
        "error: node 0 lost contact with node 1 (peer 10.0.0.7:48612): that node stopped or its network failed; "
        "start the job again with --resume on every node")
    four = {"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "2", "NODE_RANK": "2"}
    assert "with one of nodes 0, 1, 3" in deepspeed.lost_node_message(RuntimeError("Timed out waiting"), four)
    assert deepspeed.lost_node_message(RuntimeError(GLOO_RESET), {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}) is None
    assert deepspeed.lost_node_message(ValueError("bad row"), two) is None
