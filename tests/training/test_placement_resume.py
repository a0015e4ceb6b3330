"""A layer-placed run with weights offloaded to disk resumes part-way: the checkpoint's adapter is loaded
into the placed model (not re-dispatched), and training continues exactly as the uninterrupted run."""

import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("accelerate")

from .jobs import adapter, compile_job, launch, metrics  # noqa: E402

pytestmark = pytest.mark.slow


def test_naive_mp_with_disk_offload_resumes_from_a_checkpoint_as_if_uninterrupted(tmp_path, model_dir):
    out = tmp_path / "out"
    job = compile_job(tmp_path, "naive-mp-cpu.yaml", training={
        "max_steps": 4, "save_steps": 2, "gradient_accumulation_steps": 1, "output_dir": str(out)})
    lines = []
    assert launch(job, echo=lines.append).returncode == 0, "\n".join(lines[-40:])
    assert '"disk"' in next(line for line in lines if line.startswith("placement:"))
    full, full_losses = adapter(out), [m["loss"] for m in metrics(out)]

    # the run as if it had died after committing checkpoint-2: the later checkpoint and the adapter are gone
    shutil.rmtree(out / "checkpoints" / "checkpoint-4")
    (out / "adapter_model.safetensors").unlink()
    (out / "metrics.jsonl").write_text("".join(line + "\n" for line in (out / "metrics.jsonl").read_text()
                                               .splitlines()[:2]))
    lines = []
    assert launch(job, resume=True, echo=lines.append).returncode == 0, "\n".join(lines[-40:])
    assert any("adapter weights loaded in place from" in line and "checkpoint-2" in line for line in lines)

    # step 3 starts from checkpoint-2's adapter and optimizer, so every later loss and the final adapter match
    assert [m["loss"] for m in metrics(out)] == pytest.approx(full_losses, rel=1e-6)
    resumed = adapter(out)
    assert resumed.keys() == full.keys()
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=1e-5, atol=1e-6)
    middle = adapter(out / "checkpoints" / "checkpoint-2")
    assert not [key for key in full if torch.equal(middle[key], resumed[key])]  # it trained past the checkpoint
