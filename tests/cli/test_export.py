"""`qcompile export SPEC`: the merged folder loads with from_pretrained and computes base + adapter; the
host budget picks in memory or shard by shard (same bytes either way) or refuses with the figures; the
refusals (no adapter, foreign or edited output, other adapter types, pre-quantised or missing weights)
exit 1 with one line and a hint, before torch is even imported."""

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from qcompile.cli.main import cli
from tests.cli.test_light_core import qcompile_without_torch
from tests.compiler.export_fixtures import make_adapter, sharded_copy
from tests.training.jobs import write_spec

torch = pytest.importorskip("torch")
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def base(model_dir, tmp_path_factory):
    return sharded_copy(model_dir, tmp_path_factory.mktemp("export") / "base")


def spec_for(folder: Path, base: Path, **overrides) -> Path:
    return write_spec(folder, "zero2-cpu.yaml", model={"name": str(base), **overrides.pop("model", {})},
                      training={"output_dir": str(folder / "run")}, **overrides)


def export(*args):
    result = CliRunner().invoke(cli, ["export", *map(str, args)])
    return result.exit_code, result.output


def logits(model_dir, ids, adapter=None):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    with torch.no_grad():
        return model(ids).logits


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        out.update(load_file(path))
    return out


IDS = torch.randint(0, 1000, (2, 20), generator=torch.Generator().manual_seed(5))


def test_export_writes_a_model_that_loads_and_matches(base, tmp_path):
    from transformers import AutoTokenizer

    spec = spec_for(tmp_path, base)
    adapter = make_adapter(base, tmp_path / "run", "dora")
    code, output = export(spec)
    assert code == 0, output
    out = tmp_path / "run" / "merged"
    assert "in memory (peft merge_and_unload)" in output and f"written to {out}" in output
    assert torch.allclose(logits(out, IDS), logits(base, IDS, adapter), atol=1e-5, rtol=0)
    text = "hello export"
    assert AutoTokenizer.from_pretrained(out)(text).input_ids == AutoTokenizer.from_pretrained(base)(text).input_ids
    assert json.loads((out / ".qcompile-export.json").read_text())["generator"] == "qcompile"


def test_host_budget_chooses_shard_by_shard_with_the_same_bytes(base, tmp_path):
    from qcompile.compiler.export import plan_export
    from qcompile.compiler.load import load_spec

    spec = spec_for(tmp_path, base)
    make_adapter(base, tmp_path / "run", "adalora")
    loaded = load_spec(spec, memory_check=False, choose=False)
    plan = plan_export(loaded.spec, spec, loaded.spec_dir, loaded.context.arch, None)
    assert plan.params == loaded.context.arch.num_params() == sum(s.params for s in plan.shards)
    assert plan.by_shard_bytes < plan.in_memory_bytes

    assert export(spec, "-o", tmp_path / "memory")[0] == 0
    spec = spec_for(tmp_path, base, hardware={"host_memory": plan.by_shard_bytes})
    code, output = export(spec, "-o", tmp_path / "shards")
    assert code == 0, output
    assert "-> shard by shard" in output
    assert len(list((tmp_path / "shards").glob("*.safetensors"))) == len(plan.shards) > 1
    memory, shards = weights(tmp_path / "memory"), weights(tmp_path / "shards")
    assert memory.keys() == shards.keys()
    assert all(torch.equal(memory[k], shards[k]) for k in memory)
    assert torch.allclose(logits(tmp_path / "shards", IDS), logits(base, IDS, tmp_path / "run"), atol=1e-5, rtol=0)

    code, output = export(spec, "--mode", "memory", "-o", tmp_path / "forced")
    assert code == 1 and "merging in memory needs" in output and "--mode shards" in output
    spec = spec_for(tmp_path, base, hardware={"host_memory": plan.by_shard_bytes - 1})
    code, output = export(spec, "-o", tmp_path / "none")
    assert code == 1
    assert "does not fit hardware.host_memory" in output and "in memory" in output and "shard by shard" in output
    assert not (tmp_path / "none").exists()


def test_a_quantised_run_merges_into_unquantised_weights(base, tmp_path):
    pytest.importorskip("bitsandbytes")
    spec = spec_for(tmp_path, base, model={"quantization": {"bits": 4, "compute_dtype": "float32"}},
                    backend="naive-model-parallel")
    adapter = make_adapter(base, tmp_path / "run", "lora", quantized=True)
    code, output = export(spec)
    assert code == 0, output
    assert "4-bit base is merged unquantised" in output
    out = tmp_path / "run" / "merged"
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    assert all(t.dtype == torch.float32 for t in weights(out).values())
    assert torch.allclose(logits(out, IDS), logits(base, IDS, adapter), atol=1e-5, rtol=0)


def test_a_second_export_replaces_its_own_files_only(base, tmp_path):
    spec = spec_for(tmp_path, base)
    make_adapter(base, tmp_path / "run", "lora")
    out = tmp_path / "run" / "merged"
    assert export(spec)[0] == 0
    assert export(spec)[0] == 0  # its own earlier output is replaced
    with (out / "config.json").open("a") as fh:
        fh.write("\n")
    code, output = export(spec)
    assert code == 1 and "config.json" in output and "refusing to overwrite" in output
    assert (out / "config.json").read_text().endswith("\n\n")


# ---------------------------------------------------------------- refusals, torch blocked


def no_torch(tmp_path, *args, env=None):
    old = dict(os.environ)
    os.environ.update(env or {})
    try:
        result = qcompile_without_torch("export", *map(str, args), cwd=tmp_path)
    finally:
        os.environ.clear()
        os.environ.update(old)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, errors, result.stderr


def test_refusals_need_no_torch(base, tmp_path):
    spec = spec_for(tmp_path, base)
    code, errors, err = no_torch(tmp_path, spec)
    assert code == 1 and errors == [f"error: no adapter in {tmp_path / 'run'} yet"]
    assert f"qcompile run {spec}" in err

    make_adapter(base, tmp_path / "run", "lora")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    code, errors, err = no_torch(tmp_path, spec, "-o", mine)
    assert code == 1 and len(errors) == 1 and "not written by qcompile export" in errors[0]
    assert (mine / "notes.txt").read_text() == "precious"

    for target, why in ((base, "is the model's folder; the merged files would replace"),
                        (tmp_path / "run", "holds the run's output_dir")):
        code, errors, _ = no_torch(tmp_path, spec, "-o", target)
        assert code == 1 and len(errors) == 1 and why in errors[0]

    code, errors, err = no_torch(tmp_path, spec, "-o", tmp_path / "fresh")
    assert code == 1 and errors == ["error: export needs the train extra (torch is not installed)"], err
    assert not (tmp_path / "fresh").exists() or not any((tmp_path / "fresh").iterdir())

    import fcntl

    with open(tmp_path / "run" / ".qcompile-run.lock", "w") as lock:  # a live run holds its folder's lock
        lock.write("4242")
        lock.flush()
        fcntl.flock(lock, fcntl.LOCK_EX)
        code, errors, _ = no_torch(tmp_path, spec, "--dry-run")
    assert code == 1 and len(errors) == 1 and "a run (pid 4242) is still writing" in errors[0]

    code, errors, err = no_torch(tmp_path, spec, "--dry-run", "-o", tmp_path / "dry")
    assert code == 0 and not errors and "host RAM: in memory" in err and not (tmp_path / "dry").exists()

    from safetensors.torch import load_file, save_file

    weights_file = tmp_path / "run" / "adapter_model.safetensors"
    tensors = load_file(weights_file)
    save_file({k.replace("layers.0.", "layers.9."): v for k, v in tensors.items()}, str(weights_file))
    code, errors, _ = no_torch(tmp_path, spec)
    assert code == 1 and len(errors) == 1 and "model.layers.9." in errors[0] and "does not hold" in errors[0]
    save_file(tensors, str(weights_file))

    config = tmp_path / "run" / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "peft_type": "IA3"}))
    code, errors, _ = no_torch(tmp_path, spec)
    assert code == 1 and len(errors) == 1 and "a IA3 adapter cannot be merged" in errors[0]


def test_weights_that_cannot_be_merged_are_refused(base, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(base, broken)
    spec = spec_for(tmp_path, broken)
    make_adapter(base, tmp_path / "run", "lora")
    (broken / sorted(broken.glob("model-*.safetensors"))[0].name).unlink()
    code, errors, _ = no_torch(tmp_path, spec)
    assert code == 1 and len(errors) == 1 and "is missing (listed in model.safetensors.index.json)" in errors[0]

    shutil.rmtree(broken)
    shutil.copytree(base, broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "quantization_config": {"load_in_4bit": True}}))
    code, errors, _ = no_torch(tmp_path, spec)
    assert code == 1 and len(errors) == 1 and "pre-quantised weights" in errors[0]

    spec = spec_for(tmp_path, "nobody/not-cached-anywhere")
    code, errors, err = no_torch(tmp_path, spec, env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert code == 1 and errors == ["error: the weights of nobody/not-cached-anywhere are not on this machine "
                                    "(hub cache)"], err
