"""The ZeRO-3 plan against traced steps: each of N real ranks runs one LoRA step under DeepSpeed ZeRO-3
(gloo, CPU) with the ds_config qcompile emits, counting live tensor bytes (shards, gathered weights,
optimizer partitions, activations) as trace.py does for one device."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("deepspeed")
pytest.importorskip("peft")

from qcompile.compiler.planner.trace import TraceCase  # noqa: E402
from qcompile.schemas.spec import Spec  # noqa: E402
from tests.helpers import narrowed  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]
WIDE = dict(num_layers=4, vocab_size=256, hidden_size=128, intermediate_size=512, seq_len=64)


def zero3_spec(case: TraceCase, ranks: int, config: Path) -> Spec:
    data = yaml.safe_load((REPO / "examples" / "zero3-cpu.yaml").read_text())
    data["model"].update({"name": "traced", "config": str(config), "dtype": case.dtype})
    data["hardware"]["devices_per_node"] = ranks
    data["lora"].update({"r": case.r, "target_modules": list(case.target_modules), "dropout": 0.0})
    data["strategies"].update({"max_seq_length": case.seq_len, "gradient_checkpointing": case.checkpointing,
                               "attention": case.attention, "offload": {"optimizer": "none", "params": "none"}})
    data["training"].update({"micro_batch_size": case.batch, "gradient_accumulation_steps": 1})
    return Spec.model_validate(data)


@pytest.mark.parametrize("ranks, changes", [
    (2, {}), (2, dict(checkpointing=True)),
    (2, dict(num_layers=2, vocab_size=1000, hidden_size=64, intermediate_size=176, seq_len=128, batch=2)),
    (1, dict(checkpointing=True))],
                         ids=["2-ranks", "2-ranks-checkpointing", "2-ranks-wide-vocab", "1-rank"])
def test_zero3_plan_within_6_percent_of_traced_ranks(tmp_path, ranks, changes):
    case = TraceCase(**{**WIDE, "dtype": "float32", **changes})
    (tmp_path / "config.json").write_text(json.dumps(case.config_dict()))
    spec = zero3_spec(case, ranks, tmp_path / "config.json")
    ctx = narrowed(spec, tmp_path)
    ds_config = ctx.backend.ds_config(ctx)
    planned = ctx.plan.devices[0].tensor_bytes
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
           "TORCH_EXTENSIONS_DIR": str(REPO / ".cache" / "torch_extensions")}
    fields = {k: v for k, v in case.__dict__.items() if k != "target_modules"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={ranks}", "--standalone",
                           str(Path(__file__).with_name("zero3_step.py")), json.dumps(fields), json.dumps(ds_config),
                           str(tmp_path / "peak")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    traced = max(json.loads((tmp_path / f"peak.{r}").read_text())["peak"] for r in range(ranks))
    assert abs(planned - traced) / traced < 0.06, (planned, traced)
