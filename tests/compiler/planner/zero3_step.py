"""torchrun worker for test_zero3_trace: one traced ZeRO-3 LoRA step per rank (a random model built inside
zero.Init from the case config, the emitted ds_config), writing the rank's peak live tensor bytes.

argv: case JSON (TraceCase fields), ds_config JSON, output prefix (one file per rank)."""
import gc
import json
import os
import sys

import deepspeed
import torch

from qcompile.compiler.planner.trace import TraceCase, _counting_mode, _LiveBytes

case = TraceCase(**json.loads(sys.argv[1]))
ds = json.loads(sys.argv[2])
deepspeed.init_distributed(dist_backend="gloo")
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.integrations import HfDeepSpeedConfig

keep = HfDeepSpeedConfig(ds)  # zero.Init in from_config
config = AutoConfig.for_model(**case.config_dict())
config._attn_implementation = case.attention
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, case.dtype))
lora = LoraConfig(r=case.r, lora_alpha=2 * case.r, target_modules=list(case.target_modules), task_type="CAUSAL_LM")
model = get_peft_model(model, lora)
if case.checkpointing:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
model.train()
trainable = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(trainable, lr=1e-4, foreach=False)
engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=ds)
ids = torch.randint(0, case.vocab_size, (case.batch, case.seq_len))


def step():
    loss = engine(input_ids=ids, labels=ids).loss
    engine.backward(loss)
    engine.step()


step()
gc.collect()
counter = _LiveBytes()
for obj in gc.get_objects():
    if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
        try:
            counter.add(obj)
        except Exception:  # noqa: BLE001 - objects the dispatcher cannot count are not tensors we need
            pass
start = counter.current
with _counting_mode(counter):
    step()
rank = int(os.environ["RANK"])
with open(f"{sys.argv[3]}.{rank}", "w") as out:
    out.write(json.dumps({"rank": rank, "peak": counter.peak, "start": start}))
