"""One real run, then resumes with changed specs: refused before launch, or applied and reported."""

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from qcompile.cli.main import cli

from .test_run_cli import spec_file


@pytest.mark.slow
def test_a_real_run_resumes_only_with_a_compatible_spec(tmp_path, model_dir):
    spec = spec_file(tmp_path, "naive-mp-cpu.yaml", max_steps=2, save_steps=1)
    build = ["-o", str(tmp_path / "build")]
    first = CliRunner().invoke(cli, ["run", spec, *build])
    assert first.exit_code == 0, first.output

    def change(section, **values):
        data = yaml.safe_load(Path(spec).read_text())
        data[section].update(values)
        Path(spec).write_text(yaml.safe_dump(data))

    change("training", learning_rate=1.0e-2)
    refused = CliRunner().invoke(cli, ["run", spec, *build, "--resume"])
    assert refused.exit_code == 1 and "training.learning_rate: 0.005 -> 0.01" in refused.output
    assert "launch:" not in refused.output  # refused before anything started
    change("training", learning_rate=5.0e-3, logging_steps=2)
    resumed = CliRunner().invoke(cli, ["run", spec, *build, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "resume: training.logging_steps: 1 -> 2 (applied)" in resumed.output
