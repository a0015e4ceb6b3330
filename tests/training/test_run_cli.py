"""`qcompile run`: the CLI compiles, starts the emitted launch.sh and reports failures."""

import json

import pytest
from click.testing import CliRunner

from qcompile.cli.main import cli

from .jobs import write_spec


def spec_file(tmp_path, example: str, data_path=None, **training) -> str:
    data = {"path": str(data_path)} if data_path else {}
    return str(write_spec(tmp_path, example, data=data, training={"output_dir": str(tmp_path / "out"), **training}))


def test_dry_run_prints_the_launch_and_environment(tmp_path):
    result = CliRunner().invoke(cli, ["run", spec_file(tmp_path, "zero2-cpu.yaml"), "-o", str(tmp_path / "build"),
                                      "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "torch.distributed.run --nproc-per-node=2" in result.output
    assert "DS_ACCELERATOR=cpu" in result.output and "OMP_NUM_THREADS=1" in result.output
    assert "TORCH_EXTENSIONS_DIR=" in result.output
    assert (tmp_path / "build" / "ds_config.json").exists() and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_bad_row_stops_both_ranks_and_the_failing_rank_is_shown(tmp_path, model_dir):
    pytest.importorskip("deepspeed")
    bad = tmp_path / "bad.jsonl"
    rows = [json.dumps({"instruction": "Say hi.", "output": "hi"})] * 2 + ['{"instruction": "Say hi."}']
    bad.write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(cli, ["run", spec_file(tmp_path, "zero2-cpu.yaml", bad), "-o", str(tmp_path / "b")])
    assert result.exit_code == 1
    assert f"error: {bad}:3:1: missing key 'output' for the alpaca format" in result.output
    assert "training failed" in result.output and "last lines of rank" in result.output
    assert "Traceback" not in result.output.split("training failed")[1]
    assert "ChildFailedError" not in result.output  # torchrun's own report stays out of the way
    assert f"likely cause: {bad}:3:1: missing key 'output' for the alpaca format" in result.output
    assert not (tmp_path / "out" / "checkpoints").exists()  # stopped before training


@pytest.mark.slow
def test_run_trains_and_refuses_to_overwrite_without_resume(tmp_path, model_dir):
    spec = spec_file(tmp_path, "naive-mp-cpu.yaml", max_steps=2, save_steps=2)
    build = ["-o", str(tmp_path / "build")]
    first = CliRunner().invoke(cli, ["run", spec, *build])
    assert first.exit_code == 0, first.output
    assert "step 2/2 | loss" in first.output and "tok/s" in first.output and "eta" in first.output
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()
    again = CliRunner().invoke(cli, ["run", spec, *build])
    assert again.exit_code == 1 and "resume it with --resume" in again.output
    resumed = CliRunner().invoke(cli, ["run", spec, *build, "--resume"])
    assert resumed.exit_code == 0 and "is the end of the run" in resumed.output
