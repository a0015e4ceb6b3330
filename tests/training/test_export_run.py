"""`qcompile export` after a real run: the adapter a 2-step ZeRO-2 job saved merges, in memory and shard
by shard to the same bytes, into a model whose logits are base + adapter's."""

import pytest
from click.testing import CliRunner

from qcompile.cli.main import cli
from tests.training.jobs import compile_job, launch

torch = pytest.importorskip("torch")


@pytest.mark.slow
def test_a_real_runs_adapter_exports_and_matches(tmp_path, model_dir):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    job = compile_job(tmp_path, "zero2-cpu.yaml", training={"output_dir": str(run), "max_steps": 2, "save_steps": 2})
    assert launch(job).returncode == 0
    spec = str(tmp_path / "spec.yaml")
    memory = CliRunner().invoke(cli, ["export", spec])
    assert memory.exit_code == 0, memory.output
    shards = CliRunner().invoke(cli, ["export", spec, "--mode", "shards", "-o", str(tmp_path / "shards")])
    assert shards.exit_code == 0, shards.output
    merged = load_file(run / "merged" / "model.safetensors")
    assert merged.keys() == load_file(tmp_path / "shards" / "model.safetensors").keys()
    assert all(torch.equal(v, load_file(tmp_path / "shards" / "model.safetensors")[k]) for k, v in merged.items())

    ids = torch.randint(0, 1000, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        plain = base(ids).logits
        expected = PeftModel.from_pretrained(base, run)(ids).logits
        got = AutoModelForCausalLM.from_pretrained(run / "merged", dtype=torch.float32)(ids).logits
    assert (expected - plain).abs().max() > 1e-2  # two steps moved the adapter: the comparison can fail
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
