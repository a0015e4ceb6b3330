"""The run lock lives as long as the job: `qcompile run` hands its descriptor to the launcher, so a
kill -9 of `qcompile run` (the job goes on in its own session) leaves the output_dir locked until the
job itself ends. The launcher is replaced by a sleeper; everything else is the real command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from qcompile.compiler.run_guard import _lock_holder
from tests.cli.test_run_guard import make_spec, qcompile

# `qcompile run` with launch.sh replaced by a process that records its pid and sleeps.
RUNNER = """
import sys
from qcompile.cli import run as run_module
from qcompile.cli.main import cli
sleeper = "import os, sys, time; open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid())); " \\
          "os.replace(sys.argv[1] + '.tmp', sys.argv[1]); time.sleep(300)"
run_module.launch_script_argv = lambda resume: [sys.executable, "-c", sleeper, sys.argv[3]]
cli(["run", sys.argv[1], "-o", sys.argv[2]])
"""


def wait_for(path, seconds=120):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_the_lock_outlives_a_kill_9_of_qcompile_run_while_the_job_runs(tmp_path):
    spec = make_spec(tmp_path)
    pidfile = tmp_path / "job.pid"
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(spec), str(tmp_path / "build"), str(pidfile)],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    job_pid = None
    try:
        wait_for(pidfile)
        job_pid = int(pidfile.read_text())
        assert _lock_holder(tmp_path / "out") == str(runner.pid)
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
        assert _lock_holder(tmp_path / "out") == str(runner.pid)  # still held: the job has the descriptor
        second = qcompile("run", spec, "-o", tmp_path / "build", "--dry-run", cwd=tmp_path)
        assert second.returncode == 1 and "another qcompile run" in second.stderr
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        if job_pid is not None:
            os.kill(job_pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _lock_holder(tmp_path / "out") is not None:  # the job's end drops it
        assert time.monotonic() < deadline, "the lock stayed after the job ended"
        time.sleep(0.05)
    again = qcompile("run", spec, "-o", tmp_path / "build", "--dry-run", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
