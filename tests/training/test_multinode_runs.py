"""Two "nodes" on one machine: two torchrun agents with one rank each (gloo, c10d rendezvous on 127.0.0.1
and a free port), started the ways a cluster user starts them: the emitted launch.sh with NODE_RANK/
MASTER_ADDR/MASTER_PORT from each node's own working directory, `qcompile run --node-rank K`, and
slurm.sbatch under a fake srun. Each two-node adapter equals the same job's on one node with two ranks
(same seed, same global batch); one node killed mid-run fails the other in bounded time, and --resume on
both continues. A few steps each."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("deepspeed")

from .jobs import adapter, compile_job, job_env, launch, metrics, write_spec  # noqa: E402
from .test_train_runs import kill_tree  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("model_dir")]

TWO_NODES = {"nodes": 2, "devices_per_node": 1}
ONE_NODE = {"nodes": 1, "devices_per_node": 2}
STEPS = {"max_steps": 3, "save_steps": 3, "logging_steps": 1}
LOST_NODE_BOUND_S = 60  # README: a killed node's peers stop within seconds; this leaves room for a busy machine
EXAMPLE = {"zero2": "zero2-cpu.yaml", "zero3": "zero3-cpu.yaml"}
SRUN = """#!/usr/bin/env bash
# fake srun: one task per node in its own folder, with the variables SLURM gives each task
nodes=1
while [[ "${1:-}" == --* ]]; do case "$1" in --nodes=*) nodes="${1#--nodes=}" ;; esac; shift; done
echo "srun: $nodes nodes: $*" >> "$FAKE_SLURM/srun.log"
pids=()
for ((i = 0; i < nodes; i++)); do
    mkdir -p "$FAKE_SLURM/node$i"
    (cd "$FAKE_SLURM/node$i" && SLURM_NODEID=$i SLURM_PROCID=$i SLURM_LOCALID=0 exec "$@" > log 2>&1) &
    pids+=($!)
done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
exit $rc
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_env(job, rank: int, port: int) -> dict[str, str]:
    env = job_env(job.build.env)
    env.update({"NODE_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
    return env


def start_nodes(argvs: list[list[str]], envs: list[dict], folder: Path) -> list[subprocess.Popen]:
    """One process per node, each from its own working directory folder/nodeK, output in nodeK/log."""
    processes = []
    for rank, (argv, env) in enumerate(zip(argvs, envs, strict=True)):
        cwd = folder / f"node{rank}"
        cwd.mkdir(parents=True, exist_ok=True)
        with open(cwd / "log", "w") as log:
            processes.append(subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))
    return processes


def wait_all(processes, folder: Path, timeout: float = 400) -> list[int]:
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(timeout=max(1, deadline - time.monotonic())) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                kill_tree(p)


def logs(folder: Path) -> str:
    return "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(folder.glob("node*/log")))


def two_node_job(tmp_path: Path, stage: str, name: str, **training):
    out = tmp_path / name / "out"
    job = compile_job(tmp_path / name, EXAMPLE[stage], hardware=TWO_NODES,
                      training={**STEPS, **training, "output_dir": str(out)})
    return job, out


def run_launch_sh(job, folder: Path, resume: bool = False) -> None:
    port = free_port()
    argv = ["bash", str(job.build_dir / "launch.sh"), *(["--resume"] if resume else [])]
    processes = start_nodes([argv, argv], [node_env(job, 0, port), node_env(job, 1, port)], folder)
    assert wait_all(processes, folder) == [0, 0], logs(folder)


@pytest.fixture(scope="module")
def one_node(tmp_path_factory):
    """The reference adapters: each job on one node with two ranks. ZeRO-2's build is emitted in a project
    folder that is then moved away: the build runs from its new place."""
    root = tmp_path_factory.mktemp("one-node")
    adapters = {}
    for stage in EXAMPLE:
        project = root / f"{stage}-project"
        spec = write_spec(project, EXAMPLE[stage], hardware=ONE_NODE, training={**STEPS, "output_dir": "out"})
        from qcompile.compiler.emit import emit

        job = emit(spec, project / "build")
        if stage == "zero2":
            moved = root / "moved" / "project"
            moved.parent.mkdir()
            shutil.move(str(project), str(moved))
            project = moved
            job = type(job)(moved / "build", job.build, job.loaded)
        lines = []
        result = launch(job, echo=lines.append)
        assert result.returncode == 0, "\n".join(lines[-40:])
        assert (project / "out" / "adapter_model.safetensors").exists()
        adapters[stage] = (adapter(project / "out"), [m["loss"] for m in metrics(project / "out")])
    return adapters


def assert_same_job(out: Path, reference) -> list[float]:
    ref_adapter, ref_losses = reference
    losses = [m["loss"] for m in metrics(out)]
    assert len(losses) == STEPS["max_steps"] and losses[-1] < losses[0], losses  # loss falls
    tuned = adapter(out)
    assert tuned.keys() == ref_adapter.keys()
    worst = max((tuned[k] - ref_adapter[k]).abs().max().item() for k in tuned)
    assert worst <= 1e-5, f"two nodes vs one node: max |difference| {worst}"
    assert losses == pytest.approx(ref_losses, abs=1e-5)
    print(f"losses two nodes {losses}, one node {ref_losses}; adapter max |difference| {worst:.3g}")
    return losses


def only_one_adapter(*folders: Path) -> None:
    found = [p for f in folders for p in f.rglob("adapter_model.safetensors") if "checkpoints" not in p.parts]
    assert len(found) == 1, found


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_two_nodes_through_launch_sh_equal_one_node(tmp_path, stage, one_node):
    job, out = two_node_job(tmp_path, stage, "job")
    run_launch_sh(job, tmp_path / "nodes")
    assert_same_job(out, one_node[stage])
    only_one_adapter(out, tmp_path / "nodes")
    node0, node1 = (tmp_path / "nodes" / f"node{k}" / "log" for k in (0, 1))
    assert "rendezvous 127.0.0.1:" in node0.read_text() and "node 1 of 2" in node1.read_text()
    assert sorted(p.name for p in (tmp_path / "nodes" / "node1").iterdir()) == ["log"]  # nothing else written there


def test_two_nodes_through_qcompile_run_node_rank(tmp_path, one_node):
    out = tmp_path / "out"
    spec = write_spec(tmp_path / "spec", EXAMPLE["zero2"], hardware=TWO_NODES,
                      training={**STEPS, "output_dir": str(out)})
    port = free_port()
    argvs = [[sys.executable, "-m", "qcompile", "run", str(spec), "--node-rank", str(k), "--master-addr", "127.0.0.1",
              "--master-port", str(port), "-o", "build"] for k in (0, 1)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    processes = start_nodes(argvs, [env, env], tmp_path / "nodes")
    assert wait_all(processes, tmp_path / "nodes") == [0, 0], logs(tmp_path / "nodes")
    assert_same_job(out, one_node["zero2"])
    only_one_adapter(out, tmp_path / "nodes")
    assert (tmp_path / "nodes" / "node1" / "build" / "launch.sh").exists()  # each node emitted its own build


def test_slurm_sbatch_under_a_fake_srun(tmp_path, one_node):
    job, out = two_node_job(tmp_path, "zero2", "job")
    bin_dir, slurm = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir()
    slurm.mkdir()
    (bin_dir / "srun").write_text(SRUN)
    (bin_dir / "srun").chmod(0o755)
    env = job_env(job.build.env)
    env.update({"PATH": f"{bin_dir}:{env['PATH']}", "FAKE_SLURM": str(slurm), "SLURM_JOB_ID": "4242",
                "SLURM_JOB_NODELIST": "localhost,localhost", "SLURM_SUBMIT_DIR": str(job.build_dir),
                "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"})
    env.pop("MASTER_ADDR", None)
    result = subprocess.run(["bash", str(job.build_dir / "slurm.sbatch")], cwd=slurm, env=env, capture_output=True,
                            text=True, timeout=400, check=False)
    assert result.returncode == 0, result.stderr + logs(slurm)
    assert "srun: 2 nodes: bash" in (slurm / "srun.log").read_text()
    node0 = (slurm / "node0" / "log").read_text()
    assert "node 0 of 2, rendezvous localhost:" in node0 and "-4242" in node0  # from SLURM's variables
    assert_same_job(out, one_node["zero2"])


def test_a_killed_node_fails_the_other_in_bounded_time_and_both_resume(tmp_path):
    job, out = two_node_job(tmp_path, "zero2", "job", max_steps=12, save_steps=2)
    port = free_port()
    argv = ["bash", str(job.build_dir / "launch.sh")]
    folder = tmp_path / "nodes"
    node0, node1 = start_nodes([argv, argv], [node_env(job, 0, port), node_env(job, 1, port)], folder)
    committed = out / "checkpoints" / "checkpoint-2" / "QCOMPILE_COMPLETE"
    deadline = time.monotonic() + 300
    while not committed.exists() and node0.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert committed.exists(), logs(folder)
    kill_tree(node1)  # node 1 dies: its agent and its worker
    killed = time.monotonic()
    try:
        code = node0.wait(timeout=LOST_NODE_BOUND_S)
    finally:
        if node0.poll() is None:
            kill_tree(node0)
    took = time.monotonic() - killed
    text = (folder / "node0" / "log").read_text()
    assert code != 0 and "error: node 0 lost contact with node 1" in text, text[-3000:]
    assert not (out / "adapter_model.safetensors").exists(), "killed too late"
    print(f"node 0 exited {took:.1f} s after node 1 was killed, exit code {code}")
    run_launch_sh(job, tmp_path / "resumed", resume=True)
    steps = [m["step"] for m in metrics(out)]
    assert steps[-1] == 12 and (out / "adapter_model.safetensors").exists()
    assert "resuming from" in (tmp_path / "resumed" / "node0" / "log").read_text() + \
        (tmp_path / "resumed" / "node1" / "log").read_text()
