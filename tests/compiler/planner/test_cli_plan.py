import json

from click.testing import CliRunner

from qcompile.cli.plan import plan

from .conftest import EXAMPLE


def _run(*args):
    return CliRunner().invoke(plan, [str(a) for a in args])


def test_plan_example_auto_fits():
    result = _run(EXAMPLE)
    assert result.exit_code == 0, result.output
    # ZeRO-3 fits and keeps data-parallel speed, so auto prefers it to naive model parallel
    assert "auto: deepspeed-zero3" in result.output and "rank 0..7" in result.output
    assert "host RAM per node: at load" in result.output


def test_plan_zero2_does_not_fit_and_lists_fixes():
    result = _run(EXAMPLE, "--backend", "deepspeed-zero2")
    assert result.exit_code == 1
    assert "134.6 GiB" in result.output and "would fit" in result.output


def test_plan_all_json():
    result = _run(EXAMPLE, "--backend", "all", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.output)
    verdicts = {p["backend"]: p["fits"] for p in doc["plans"]}
    assert verdicts["deepspeed-zero2"] is False and verdicts["naive-model-parallel"] is True


def test_plan_single_backend_json_keys():
    doc = json.loads(_run(EXAMPLE, "--backend", "naive-model-parallel", "--json").output)
    assert {"backend", "fits", "devices", "host", "reasons"} <= set(doc)


def test_plan_unknown_backend_and_bad_spec(tmp_path):
    assert _run(EXAMPLE, "--backend", "nonsense").exit_code == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmodel: {name: x}\n")
    assert _run(bad).exit_code == 1


def test_plan_unknown_architecture_is_a_user_error(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(EXAMPLE.read_text().replace("Qwen/Qwen1.5-72B-Chat", "acme/mystery"))
    result = _run(spec)
    assert result.exit_code == 1 and "model.config" in result.output
