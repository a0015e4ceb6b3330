"""A failed job is reported as qcompile's summary: the failing rank, its last lines and the likely cause,
without the launcher's own traceback on top."""

import sys

import pytest

from qcompile.compiler.launch import likely_cause, run_job

TORCHRUN_LIKE = r"""
import sys
print("[default0]:step 1/4 | loss 7.1", flush=True)
print("[default1]:error: data.jsonl:3: missing key 'output' for the alpaca format", flush=True)
print("E1128 12:00:00 api.py:874] failed (exitcode: 1) local_rank: 1 (pid: 42) of binary: python", flush=True)
print("Traceback (most recent call last):", flush=True)
print('  File "torchrun", line 8, in <module>', flush=True)
print("torch.distributed.elastic.multiprocessing.errors.ChildFailedError:", flush=True)
sys.exit(1)
"""


def test_the_failed_rank_its_tail_and_cause_without_the_launchers_traceback(tmp_path):
    (tmp_path / "launcher.py").write_text(TORCHRUN_LIKE)
    shown = []
    result = run_job(tmp_path, [sys.executable, "launcher.py"], {}, echo=shown.append)
    assert result.returncode == 1 and result.failed_rank == 1
    assert result.tail == ["error: data.jsonl:3: missing key 'output' for the alpaca format"]
    assert result.cause == "data.jsonl:3: missing key 'output' for the alpaca format"
    assert shown[-1].startswith("E1128") and not any("Traceback" in line or "ChildFailed" in line for line in shown)


@pytest.mark.parametrize("tail, code, cause", [
    (["RuntimeError: shapes do not match"], 1, "RuntimeError: shapes do not match"),
    (["torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"], 1, "out of device memory"),
    (["RuntimeError: Address already in use"], 1, "the rendezvous port is taken"),
    (["step 3/8 | loss 2.1"], -9, "a process was killed"),
    (["step 3/8 | loss 2.1"], 1, None),
])
def test_likely_cause(tail, code, cause):
    found = likely_cause(tail, code)
    assert (found is None) if cause is None else found.startswith(cause)
