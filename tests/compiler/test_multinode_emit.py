"""A job on several nodes, without training: the emitted launch.sh, slurm.sbatch, hostfile and
launch_deepspeed.sh (run by bash with a stand-in for Python), the rendezvous id, `qcompile run`'s refusals
before launch, and portable paths in train_config.json."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from qcompile.cli.main import cli
from qcompile.compiler.emit import compile_spec, emit
from qcompile.compiler.launch import node_environment, shell_command
from qcompile.compiler.load import load_spec
from qcompile.errors import UserError
from tests.conftest import REPO, TESTS

# Stands in for the job's Python: prints the arguments launch.sh passes, one per line, and the variables.
ECHO_PYTHON = """#!/usr/bin/env bash
printf 'arg=%s\\n' "$@"
echo "TORCH_EXTENSIONS_DIR=$TORCH_EXTENSIONS_DIR NODE_RANK=$NODE_RANK MASTER_ADDR=$MASTER_ADDR"
"""


def project(tmp_path: Path, case: str = "deepspeed-zero2", **hardware) -> Path:
    """tests/specs/<case>.yaml in its own folder (with its model config and data), on these hardware values."""
    shutil.copytree(TESTS / "specs" / "models", tmp_path / "models")
    shutil.copytree(TESTS / "specs" / "data", tmp_path / "data")
    data = yaml.safe_load((TESTS / "specs" / f"{case}.yaml").read_text())
    data["hardware"].update({"nodes": 2, "devices_per_node": 1, **hardware})
    data["training"]["output_dir"] = "out"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def launch(build: Path, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """launch.sh with only these variables (plus PATH and a stand-in PYTHON)."""
    fake = tmp_path / "fake-python"
    fake.write_text(ECHO_PYTHON)
    fake.chmod(0o755)
    base = {"PATH": os.environ["PATH"], "PYTHON": str(fake), "HOME": str(tmp_path)}
    return subprocess.run(["bash", str(build / "launch.sh"), *args], env={**base, **env}, capture_output=True,
                          text=True, timeout=60, check=False, cwd=tmp_path)


def args_of(result: subprocess.CompletedProcess) -> dict[str, str]:
    lines = [line for line in result.stdout.splitlines() if line.startswith("arg=--")]
    pairs = [line.removeprefix("arg=").split("=", 1) for line in lines]
    return {p[0]: (p[1] if len(p) > 1 else "") for p in pairs}


@pytest.fixture
def build(tmp_path) -> Path:
    return emit(project(tmp_path / "p"), tmp_path / "p" / "build").build_dir


def test_several_nodes_emit_slurm_hostfile_and_deepspeed_command_and_every_script_parses(build):
    names = sorted(p.name for p in build.iterdir())
    assert {"slurm.sbatch", "hostfile", "launch_deepspeed.sh", "launch.sh"} <= set(names)
    for script in ("launch.sh", "slurm.sbatch", "launch_deepspeed.sh"):
        result = subprocess.run(["bash", "-n", str(build / script)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, (script, result.stderr)
    hostfile = [line for line in (build / "hostfile").read_text().splitlines() if line and not line.startswith("#")]
    assert hostfile == ["node-0 slots=1", "node-1 slots=1"]
    deepspeed = (build / "launch_deepspeed.sh").read_text()
    command = ('-m deepspeed.launcher.runner --hostfile=hostfile --num_nodes=2 --num_gpus=1 '
               '"--master_addr=${MASTER_ADDR}"')
    assert command in deepspeed and "--no_local_rank train.py --config train_config.json" in deepspeed


def test_one_node_emits_no_cluster_files(tmp_path):
    result = emit(project(tmp_path, nodes=1, devices_per_node=2), tmp_path / "build")
    assert not {"slurm.sbatch", "hostfile", "launch_deepspeed.sh"} & set(result.build.files)
    assert "--standalone" in result.build.files["launch.sh"].decode()


def test_launch_sh_takes_rendezvous_from_the_environment(build, tmp_path):
    result = launch(build, tmp_path, NODE_RANK="1", MASTER_ADDR="10.0.0.5", MASTER_PORT="4321")
    assert result.returncode == 0, result.stderr
    args = args_of(result)
    assert args["--nnodes"] == "2" and args["--rdzv-backend"] == "c10d" and args["--max-restarts"] == "0"
    assert args["--rdzv-endpoint"] == "10.0.0.5:4321"
    assert args["--rdzv-id"].startswith("qc-")
    assert "is_host=0" in args["--rdzv-conf"] and "join_timeout=600" in args["--rdzv-conf"]
    assert "--resume" not in result.stdout
    # node-local JIT cache, one per node even when two nodes share a machine
    assert "qcompile-torch-extensions-" in result.stdout and "/node1 " in result.stdout
    node0 = launch(build, tmp_path, "--resume", NODE_RANK="0", MASTER_ADDR="10.0.0.5")
    assert "is_host=1" in args_of(node0)["--rdzv-conf"] and args_of(node0)["--rdzv-endpoint"] == "10.0.0.5:29500"
    assert "arg=--resume" in node0.stdout.splitlines()[-2]  # "$@" goes after train.py's own arguments


def test_launch_sh_under_srun_reads_slurm_variables(build, tmp_path):
    result = launch(build, tmp_path, SLURM_NODEID="1", SLURM_JOB_NODELIST="gpu[07-09,12],cpu3", SLURM_JOB_ID="77")
    assert result.returncode == 0, result.stderr
    args = args_of(result)
    assert args["--rdzv-endpoint"] == "gpu07:29500" and args["--rdzv-id"].endswith("-77")
    plain = launch(build, tmp_path, SLURM_NODEID="0", SLURM_JOB_NODELIST="a1,b2")
    assert args_of(plain)["--rdzv-endpoint"] == "a1:29500"
    mine = launch(build, tmp_path, SLURM_NODEID="0", SLURM_JOB_NODELIST="a1,b2", MASTER_ADDR="head")
    assert args_of(mine)["--rdzv-endpoint"] == "head:29500"  # the environment wins


@pytest.mark.parametrize("env, message", [
    ({"MASTER_ADDR": "h"}, "NODE_RANK is not set: this job runs on 2 nodes"),
    ({"NODE_RANK": "0"}, "no rendezvous address: MASTER_ADDR is not set"),
    ({"NODE_RANK": "2", "MASTER_ADDR": "h"}, "NODE_RANK=2 but the job has 2 nodes"),
    ({"NODE_RANK": "x", "MASTER_ADDR": "h"}, "NODE_RANK=x is not a number"),
])
def test_launch_sh_refuses_without_a_rendezvous(build, tmp_path, env, message):
    result = launch(build, tmp_path, **env)
    assert result.returncode == 1 and message in result.stderr and "hint:" in result.stderr
    assert "arg=" not in result.stdout  # nothing was launched


def test_a_spec_address_is_the_default_and_the_environment_wins(tmp_path):
    build = emit(project(tmp_path, rendezvous={"address": "head-0", "port": 2000}), tmp_path / "build").build_dir
    assert args_of(launch(build, tmp_path, NODE_RANK="1"))["--rdzv-endpoint"] == "head-0:2000"
    assert args_of(launch(build, tmp_path, NODE_RANK="1", MASTER_ADDR="x", MASTER_PORT="9"))["--rdzv-endpoint"] == "x:9"


def test_the_rendezvous_id_comes_from_the_run(tmp_path):
    def run_id(folder, **training):
        spec = project(folder)
        data = yaml.safe_load(spec.read_text())
        data["training"].update(training)
        spec.write_text(yaml.safe_dump(data))
        text = compile_spec(load_spec(spec)).files["launch.sh"].decode()
        return text.split("QCOMPILE_RDZV_ID:-")[1].split("$")[0]

    first, again = run_id(tmp_path / "a"), run_id(tmp_path / "b")
    assert first.startswith("qc-") and len(first) == 19
    assert first != again  # same spec text, another output_dir: another run
    assert run_id(tmp_path / "c", max_steps=9) != run_id(tmp_path / "d", max_steps=9) != first


def test_slurm_sbatch_for_gpus(tmp_path):
    spec = project(tmp_path, accelerator="cuda", devices_per_node=8, device_memory="80GiB", host_memory="1TiB",
                   time_limit="2-00:00:00")
    data = yaml.safe_load(spec.read_text())
    data["strategies"]["mixed_precision"] = "bf16"
    spec.write_text(yaml.safe_dump(data))
    sbatch = compile_spec(load_spec(spec)).files["slurm.sbatch"].decode()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --time=2-00:00:00", "srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --kill-on-bad-exit=1"):
        assert line in sbatch, line


def test_shell_command_expands_only_launch_variables():
    assert shell_command(["torchrun", "--rdzv-id=${QCOMPILE_RDZV_ID}"]).endswith('"--rdzv-id=${QCOMPILE_RDZV_ID}"')
    assert shell_command(["x", "a b"]) == "x 'a b'"
    for bad in ("${HOME}", "--x=${QCOMPILE_RDZV_ID};rm", '"${MASTER_ADDR}"'):
        with pytest.raises(ValueError, match="launch.sh cannot pass through"):
            shell_command(["torchrun", bad])


# ----------------------------------------------------------------- qcompile run's node options


def spec_of(tmp_path, **hardware):
    return load_spec(project(tmp_path, **hardware)).context.spec


@pytest.mark.parametrize("kwargs, environ, message", [
    ({}, {"MASTER_ADDR": "h"}, "this node's rank is not known"),
    ({"node_rank": 1}, {}, "no rendezvous address is known"),
    ({"node_rank": 2, "master_addr": "h"}, {}, "node rank 2 is not one of the job's nodes 0..1"),
    ({}, {"NODE_RANK": "one", "MASTER_ADDR": "h"}, "node rank one is not one"),
])
def test_node_environment_refuses(tmp_path, kwargs, environ, message):
    with pytest.raises(UserError, match=message):
        node_environment(spec_of(tmp_path), environ=environ, **kwargs)


def test_node_environment_order(tmp_path):
    spec = spec_of(tmp_path, rendezvous={"address": "spec-host", "port": 1234})
    expected = {"NODE_RANK": "1", "MASTER_ADDR": "spec-host", "MASTER_PORT": "1234"}
    assert node_environment(spec, 1, environ={}) == expected
    environ = {"NODE_RANK": "0", "MASTER_ADDR": "env-host", "MASTER_PORT": "99"}
    assert node_environment(spec, None, environ=environ) == {"NODE_RANK": "0", "MASTER_ADDR": "env-host",
                                                              "MASTER_PORT": "99"}
    assert node_environment(spec, 1, "opt", 5, environ=environ)["MASTER_ADDR"] == "opt"
    slurm = node_environment(spec, None, environ={"SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "n[1-2]"})
    assert slurm == {"NODE_RANK": "1", "MASTER_PORT": "1234"}  # launch.sh reads the node list itself


def test_qcompile_run_refuses_a_multi_node_job_without_an_address_before_writing(tmp_path, monkeypatch):
    for name in ("MASTER_ADDR", "NODE_RANK", "SLURM_NODEID", "SLURM_JOB_NODELIST"):
        monkeypatch.delenv(name, raising=False)
    spec = project(tmp_path)
    result = CliRunner().invoke(cli, ["run", str(spec), "--node-rank", "0", "-o", str(tmp_path / "build")])
    assert result.exit_code == 1, result.output
    assert "no rendezvous address is known" in result.output and "hint:" in result.output
    assert not (tmp_path / "build").exists() and not (tmp_path / "out").exists()
    one = project(tmp_path / "one", nodes=1, devices_per_node=2)
    result = CliRunner().invoke(cli, ["run", str(one), "--node-rank", "1", "--dry-run"])
    assert result.exit_code == 1 and "but the spec runs on one node" in result.output


def test_qcompile_run_dry_run_shows_the_node_launch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    monkeypatch.delenv("QCOMPILE_CACHE_DIR", raising=False)
    spec = project(tmp_path)
    result = CliRunner().invoke(cli, ["run", str(spec), "--node-rank", "1", "--master-addr", "10.1.1.1",
                                      "--master-port", "7777", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "NODE_RANK=1" in result.output and "MASTER_ADDR=10.1.1.1" in result.output
    assert "--rdzv-endpoint=10.1.1.1:7777" in result.output and "is_host=0" in result.output
    cache = re.search(r"TORCH_EXTENSIONS_DIR=(\S+)", result.output)[1]
    assert cache.startswith(f"{tmp_path}/.cache/torch_extensions/") and cache.endswith("-node1")


# ----------------------------------------------------------------- portable paths


def test_paths_inside_the_spec_folder_are_relative_to_the_build(tmp_path):
    spec = project(tmp_path / "proj")
    inside = json.loads(compile_spec(load_spec(spec), tmp_path / "proj" / "build" / "x").files["train_config.json"])
    assert inside["data"]["path"] == "../../data/train.jsonl"
    assert inside["training"]["output_dir"] == "../../out"
    outside = json.loads(compile_spec(load_spec(spec), tmp_path / "elsewhere").files["train_config.json"])
    assert outside["data"]["path"] == str(tmp_path / "proj" / "data" / "train.jsonl")
    assert outside["training"]["output_dir"] == str(tmp_path / "proj" / "out")
    hub = json.loads(compile_spec(load_spec(spec), tmp_path / "proj" / "b").files["train_config.json"])
    assert hub["model"]["path"] == "tiny-qwen2"  # a hub id stays a hub id


def test_an_offload_folder_is_portable_too(tmp_path):
    spec = project(tmp_path, nodes=1)
    data = yaml.safe_load(spec.read_text())
    data["backend"] = "accelerate-offload"
    data["strategies"]["offload"] = {"params": "disk"}
    spec.write_text(yaml.safe_dump(data))
    config = json.loads(compile_spec(load_spec(spec), tmp_path / "build").files["train_config.json"])
    assert config["backend"]["offload_folder"] == "../out/offload"


def test_the_72b_example_on_two_nodes_plans_per_node_and_emits(tmp_path):
    data = yaml.safe_load((REPO / "examples" / "qwen72b-lora.yaml").read_text())
    data["hardware"]["nodes"] = 2
    data["data"]["path"] = str(REPO / "examples" / data["data"]["path"])
    (tmp_path / "qwen72b-2x8.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    result = emit(tmp_path / "qwen72b-2x8.yaml", tmp_path / "build")
    files = result.build.files
    ds = json.loads(files["ds_config.json"])
    assert ds["train_batch_size"] == 16 * 16  # micro 1 x accumulation 16 x 2 nodes x 8 GPUs
    assert json.loads(files["train_config.json"])["world_size"] == 16
    plan = json.loads(files["memory_plan.json"])
    assert "#SBATCH --gpus-per-node=8" in files["slurm.sbatch"].decode()
    one = yaml.safe_load((REPO / "examples" / "qwen72b-lora.yaml").read_text())
    one["data"]["path"] = data["data"]["path"]
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(one, sort_keys=False))
    single = json.loads(emit(tmp_path / "one.yaml", tmp_path / "b1").build.files["memory_plan.json"])
    assert plan["host"] == single["host"]  # host RAM is per node: a second node does not change it
