"""DeepSpeed ZeRO as HF Trainer's engine, configured by the ds_config.json next to this script; on
several nodes, a lost node is named when a collective fails on it."""

import json
import os
import re
import sys
from pathlib import Path

from transformers import Trainer

from .core import STEPS, JobError

# How gloo and NCCL say that a peer vanished (its process died, or it stayed silent past the timeout).
PEER_LOST = re.compile(r"Connection closed by peer|Connection reset by peer|Broken pipe|[Tt]imed? ?out|"
                       r"NCCL communicator was aborted|remote process exited")
PEER_ADDRESS = re.compile(r"\[([0-9A-Za-z:.-]+)\]:(\d+)")


def deepspeed_arguments(cfg: dict, config_dir: Path) -> dict:
    return {
        "deepspeed": str(config_dir / cfg["backend"]["ds_config"]),
        "ddp_backend": "gloo" if cfg["accelerator"] == "cpu" else None,
        # a collective waiting on a silent peer (a lost node whose connections stay open) fails after this
        "ddp_timeout": cfg["backend"]["peer_timeout_s"],
    }


def require_deepspeed(trainer: Trainer) -> None:
    """Trainer silently trains with plain DDP when accelerate chose another engine."""
    if not trainer.is_deepspeed_enabled:
        config = json.loads(Path(trainer.args.deepspeed).read_text(encoding="utf-8"))
        stage = config["zero_optimization"]["stage"]
        raise JobError(f"DeepSpeed is not active (is ACCELERATE_USE_CPU set?); refusing to train without ZeRO-{stage}")


def lost_node_message(error: BaseException, environ=os.environ) -> str | None:
    """One line naming the node this rank lost, for a multi-node job whose collective failed on a peer."""
    per_node = int(environ.get("LOCAL_WORLD_SIZE", "0") or 0)
    nodes = int(environ.get("WORLD_SIZE", "1")) // per_node if per_node else 1
    text = str(error)
    if nodes < 2 or not PEER_LOST.search(text):
        return None
    me = environ.get("NODE_RANK", environ.get("GROUP_RANK", "?"))
    others = [str(n) for n in range(nodes) if str(n) != me]
    lost = f"node {others[0]}" if len(others) == 1 else f"one of nodes {', '.join(others)}"
    peer = PEER_ADDRESS.search(text)
    where = f" (peer {peer[1]}:{peer[2]})" if peer else ""
    return (f"error: node {me} lost contact with {lost}{where}: that node stopped or its network failed; "
            "start the job again with --resume on every node")


def report_lost_node(kind, value, traceback) -> None:
    sys.__excepthook__(kind, value, traceback)
    message = lost_node_message(value)
    if message is not None:
        print(message, file=sys.stderr, flush=True)


STEPS.engine_arguments = deepspeed_arguments
STEPS.check_trainer = require_deepspeed
sys.excepthook = report_lost_node
