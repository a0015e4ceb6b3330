"""The emitted configs pass the real parsers: DeepSpeed's DeepSpeedConfig and accelerate's loader."""

import json

import pytest
import yaml

from qcompile.compiler.emit import emit
from tests.conftest import TESTS

CASES = ["deepspeed-zero2", "deepspeed-zero3", "accelerate-offload", "naive-model-parallel"]


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("builds")
    return {case: emit(TESTS / "specs" / f"{case}.yaml", root / case) for case in CASES}


@pytest.mark.parametrize("case, stage", [("deepspeed-zero2", 2), ("deepspeed-zero3", 3)])
def test_ds_config_passes_deepspeed_parser(builds, monkeypatch, case, stage):
    pytest.importorskip("deepspeed")
    from deepspeed.runtime import config as ds_config_module

    result = builds[case]
    raw = json.loads((result.build_dir / "ds_config.json").read_text())
    assert "auto" not in json.dumps(raw)
    world = result.loaded.spec.hardware.world_size

    class DataParallel:  # what DeepSpeed asks of an mpu when reading the batch arithmetic
        def get_data_parallel_world_size(self):
            return world

    monkeypatch.setattr(ds_config_module.dist, "get_rank", lambda *a, **k: 0)
    parsed = ds_config_module.DeepSpeedConfig(str(result.build_dir / "ds_config.json"), mpu=DataParallel())
    training = result.loaded.spec.training
    assert parsed.zero_optimization_stage == stage
    assert parsed.train_micro_batch_size_per_gpu == training.micro_batch_size
    assert parsed.gradient_accumulation_steps == training.gradient_accumulation_steps
    assert parsed.train_batch_size == training.micro_batch_size * training.gradient_accumulation_steps * world
    if stage == 3:  # sizes derived from the tiny model's hidden_size 64, offload as the spec asks
        zero = parsed.zero_config
        assert zero.reduce_bucket_size == 64 * 64 and zero.prefetch_bucket_size == int(0.9 * 64 * 64)
        assert zero.param_persistence_threshold == 640 and zero.max_live_parameters == 100_000_000
        assert zero.offload_param.device == "cpu" and zero.offload_optimizer.device == "cpu"
        assert zero.gather_16bit_weights_on_model_save is False


@pytest.mark.parametrize("case", CASES)
def test_accelerate_config_loads_with_accelerate(builds, case):
    pytest.importorskip("accelerate")
    from accelerate.commands.config.config_args import load_config_from_file

    path = builds[case].build_dir / "accelerate_config.yaml"
    loaded = load_config_from_file(str(path))
    raw = yaml.safe_load(path.read_text())
    assert loaded.num_processes == raw["num_processes"]
    if case.startswith("deepspeed"):  # the DeepSpeed file owns precision and batch; accelerate must not repeat them
        assert loaded.deepspeed_config["deepspeed_config_file"].endswith("ds_config.json")
        assert "mixed_precision" not in raw
    else:
        assert str(loaded.mixed_precision) == raw["mixed_precision"] == "no"
