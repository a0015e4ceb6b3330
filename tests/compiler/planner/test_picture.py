"""memory_plan.svg: each device's bar is its plan's breakdown, to scale, against its budget line."""

import xml.etree.ElementTree as ET

from click.testing import CliRunner

from qcompile.backends import get_backend
from qcompile.cli.plan import plan as plan_command
from qcompile.compiler.planner.picture import CHART, TOP, plan_svg
from qcompile.compiler.planner.plan import plan

from .conftest import EXAMPLE, context, spec_from

SVG = "{http://www.w3.org/2000/svg}"


def bars(svg: str) -> dict:
    root = ET.fromstring(svg)
    return {g.get("data-device"): g for g in root.iter(f"{SVG}g") if g.get("class") == "bar"}


def test_bars_are_the_plans_numbers_to_scale():
    spec = spec_from(backend="deepspeed-zero2")
    result = plan(spec, context(spec).arch, get_backend("deepspeed-zero2"))
    drawn = bars(plan_svg(result))
    assert set(drawn) == {d.name for d in result.devices} | {"host at load", "host in training"}
    top = max(max(d.peak, d.budget) for d in result.devices)
    for device in result.devices:
        parts = drawn[device.name].findall(f"{SVG}rect")
        assert sum(int(p.get("data-bytes")) for p in parts) == device.peak
        for part in parts:
            assert abs(float(part.get("height")) - int(part.get("data-bytes")) * CHART / top) < 0.01
        budget = drawn[device.name].find(f"{SVG}line")
        assert abs(float(budget.get("y1")) - (TOP + CHART - device.budget * CHART / top)) < 0.01
        assert budget.get("stroke") == "red"  # ZeRO-2 does not fit the 72B example
    host = drawn["host at load"].find(f"{SVG}rect")
    assert int(host.get("data-bytes")) == result.host.load_peak


def test_plan_svg_option_writes_one_picture_per_backend(tmp_path):
    result = CliRunner().invoke(plan_command, [str(EXAMPLE), "--backend", "all", "--svg", str(tmp_path / "p.svg")])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(f"p-{k}.svg" for k in ("deepspeed-zero2", "deepspeed-zero3", "naive-model-parallel",
                                                   "accelerate-offload"))
    ET.fromstring((tmp_path / "p-deepspeed-zero3.svg").read_text())  # well-formed
