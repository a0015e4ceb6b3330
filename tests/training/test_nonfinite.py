"""A run that goes wrong never reports success: a non-finite loss or gradient norm stops it with exit 1
naming the step, and no adapter with non-finite values is ever saved."""

import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from qcompile.cli.main import cli  # noqa: E402
from qcompile.templates.script import core  # noqa: E402

from .jobs import write_spec  # noqa: E402


@pytest.mark.parametrize("logs", [{"loss": math.nan}, {"loss": 1.0, "grad_norm": math.inf}])
def test_a_non_finite_log_stops_the_run(logs):
    with pytest.raises(core.JobError, match="step 7: .* is (nan|inf); stopping without saving"):
        core.StopOnNonFinite().on_log(None, SimpleNamespace(global_step=7), None, logs=logs)
    core.StopOnNonFinite().on_log(None, SimpleNamespace(global_step=7), None, logs={"loss": 2.5, "grad_norm": 0.1})


def test_a_non_finite_adapter_is_never_moved_into_place(tmp_path):
    from safetensors.torch import save_file

    class Trainer:
        def save_model(self, folder):
            Path(folder).mkdir(parents=True)
            save_file({"lora_A": torch.tensor([1.0, math.nan])}, str(Path(folder) / "adapter_model.safetensors"))

        def is_world_process_zero(self):
            return True

    with pytest.raises(core.JobError, match="non-finite values"):
        core.save_adapter(Trainer(), tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_real_run_with_an_infinite_weight_exits_1_and_saves_nothing(tmp_path, model_dir):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken-model"
    shutil.copytree(model_dir, broken)
    weights = load_file(str(broken / "model.safetensors"))
    name = next(k for k in weights if "embed_tokens" in k)
    weights[name][:] = math.inf
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    spec = write_spec(tmp_path / "spec", "naive-mp-cpu.yaml", model={"name": str(broken)},
                      training={"output_dir": str(tmp_path / "out"), "max_steps": 2, "save_steps": 1})
    result = CliRunner().invoke(cli, ["run", str(spec), "-o", str(tmp_path / "build")])
    assert result.exit_code == 1, result.output
    assert "step 1: loss is nan; stopping without saving" in result.output
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()
