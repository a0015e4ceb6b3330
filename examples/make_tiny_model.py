"""Create the tiny random Qwen2 model the example specs train (no hub download is possible in CI).

    python examples/make_tiny_model.py [OUT_DIR]     # default: examples/models/tiny-qwen2

Hidden 64, 4 layers, vocab 1000, initializer_range 0.1 (large enough that attention-only LoRA
visibly moves the loss in a few steps). The tokenizer is a byte-level BPE trained on the bundled
JSONL data, with a ChatML chat template. Needs only torch, transformers and tokenizers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "models" / "tiny-qwen2"
DATA_FILES = ("alpaca.jsonl", "chat.jsonl", "text.jsonl")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def corpus() -> list[str]:
    """Every string in the bundled data, so the tokenizer covers it."""
    texts: list[str] = []
    for name in DATA_FILES:
        for line in (HERE / "data" / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                texts += [m["content"] for m in row.get("messages", [])]
                texts += [str(row[k]) for k in ("instruction", "input", "output", "text") if row.get(k)]
    return texts


def make_tokenizer(vocab_size: int = 1000):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    fast.chat_template = CHATML
    return fast


def make_model(out_dir: Path = DEFAULT_OUT, layers: int = 4, seed: int = 0) -> Path:
    """Write config, safetensors weights and tokenizer to out_dir; return it."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = make_tokenizer()
    config = Qwen2Config(
        vocab_size=1000,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.1,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    print(f"tiny Qwen2 written to {make_model(target)}")
