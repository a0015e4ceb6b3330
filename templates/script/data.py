"""Data: load the rows with `datasets` (local JSON lines, JSON, parquet, CSV, a save_to_disk folder or a
hub dataset), check every row before the model loads, encode each format with loss on the responses
only, hold out the eval rows (chosen by the seed), and pack samples into max_seq_length rows whose
restarting position ids keep attention inside each sample."""

import random
from pathlib import Path

import torch
from transformers import DataCollatorForSeq2Seq

from .core import STEPS, JobError, log
from .rows import RowError, check_row, scan_file

ALPACA_PROMPT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
ALPACA_PROMPT_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n"
CHAT_TEMPLATES = {
    "chatml": "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
              "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    "llama3": "{% if messages %}<|begin_of_text|>{% endif %}{% for message in messages %}<|start_header_id|>"
              "{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] }}<|eot_id|>{% endfor %}"
              "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
}
BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
PACK_WINDOW = 64  # open rows a sample may go into: near first-fit packing at a bounded cost per sample
MAX_CHARS_PER_TOKEN = 64  # longer than any token of a real vocabulary: the text a row can still use
SHOWN_DROPPED = 5  # rows named when rows are dropped


# ---------------------------------------------------------------- rows


def load_source(data: dict, path: str | None):
    """A datasets.Dataset from a local file or folder, or from the hub (cached by datasets)."""
    import datasets

    datasets.disable_progress_bars()
    where = path or data["hub_id"]
    try:
        if path is None:
            return datasets.load_dataset(data["hub_id"], data["subset"], split=data["split"],
                                         revision=data["revision"])
        if Path(path).is_dir():
            loaded = datasets.load_from_disk(path)
            if isinstance(loaded, datasets.DatasetDict):
                if data["split"] not in loaded:
                    raise JobError(f"{path}: no split {data['split']!r} (has {', '.join(loaded)}); set data.split")
                loaded = loaded[data["split"]]
            return loaded
        builder = BUILDERS.get(Path(path).suffix.lower())
        if builder is None:
            raise JobError(f"{path}: data files are .jsonl, .json, .parquet or .csv, or a save_to_disk folder")
        return datasets.load_dataset(builder, data_files=path, split="train")
    except JobError:
        raise
    except Exception as exc:  # datasets raises many kinds; each is the data's problem, said in one line
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise JobError(f"{where}: cannot load the data: {message}") from None


def read_rows(data: dict, path: str | None) -> list:
    """Every row checked (JSON files line by line, as qcompile validate does), renamed to the format's fields."""
    fmt, columns = data["format"], data["columns"]
    if path is not None and Path(path).is_file() and Path(path).suffix.lower() in (".jsonl", ".json"):
        problems, bad = scan_file(path, fmt, columns)
        if problems:
            line, column, error = problems[0]
            where = f"{path}:{line}:{column}" if line else path
            more = f" (and {bad - 1} more bad rows)" if bad > 1 else ""
            raise JobError(f"{where}: {error.message}{more}" + (f"\n  hint: {error.hint}" if error.hint else ""))
    dataset = load_source(data, path)
    rows, where = [], path or data["hub_id"]
    for number, row in enumerate(dataset, start=1):
        try:
            rows.append(check_row(row, fmt, columns))
        except RowError as error:
            hint = f"\n  hint: {error.hint}" if error.hint else ""
            raise JobError(f"{where}: row {number}: {error.message}{hint}") from None
    if not rows:
        raise JobError(f"{where}: no training rows")
    return rows


def split_eval(rows: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train rows, eval rows): round(fraction x rows), at least one, chosen by the seed, in file order."""
    if not fraction:
        return rows, []
    count = max(1, round(len(rows) * fraction))
    if count >= len(rows):
        raise JobError(f"data.eval_fraction {fraction} of {len(rows)} rows leaves none to train on")
    held = set(random.Random(seed).sample(range(len(rows)), count))
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


# ---------------------------------------------------------------- tokens


def chat_template(data: dict) -> str | None:
    name = data["chat_template"]
    if name is None:
        return None
    if name in CHAT_TEMPLATES:
        return CHAT_TEMPLATES[name]
    try:
        return Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise JobError(f"data.chat_template: cannot read {name}: {exc.strerror or exc}") from None


def render_chat(tokenizer, messages: list, template: str | None = None, prompt: bool = False) -> str:
    """The conversation as text; prompt=True adds the assistant header that precedes a reply."""
    template = template or tokenizer.chat_template
    if template:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=prompt)
    return "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages) + ("<|assistant|>\n" if prompt else "")


def encode(tokenizer, row: dict, fmt: str, max_len: int, template: str | None = None) -> dict:
    """Token ids and labels; labels are -100 outside the responses for alpaca, chat and sharegpt."""
    eos = tokenizer.eos_token or ""
    if fmt == "text":
        pieces = [(row["text"] + eos, True)]
    elif fmt == "alpaca":
        prompt = ALPACA_PROMPT if row.get("input") else ALPACA_PROMPT_NO_INPUT
        pieces = [(prompt.format(instruction=row["instruction"], input=row.get("input") or ""), False),
                  (row["output"] + eos, True)]
    else:  # chat and sharegpt: each message's text is the difference between successive renderings
        pieces, previous, messages = [], "", row["messages"]
        for i, message in enumerate(messages):
            text = render_chat(tokenizer, messages[: i + 1], template)
            if not text.startswith(previous):
                previous = ""  # a template that is not prefix-stable: fall back to the whole text
            if message["role"] == "assistant":  # the assistant header is prompt; the reply and its end are trained
                header = render_chat(tokenizer, messages[:i], template, prompt=True)
                if header.startswith(previous) and text.startswith(header):
                    pieces.append((header[len(previous):], False))
                    previous = header
            pieces.append((text[len(previous):], message["role"] == "assistant"))
            previous = text
    input_ids, labels = [], []
    for text, trained in pieces:
        room = max_len - len(input_ids)
        if room <= 0:
            break
        # No token is longer than MAX_CHARS_PER_TOKEN characters: a huge row is cut before it is tokenized.
        ids = tokenizer(text[: room * MAX_CHARS_PER_TOKEN], add_special_tokens=False)["input_ids"]
        input_ids += ids
        labels += ids if trained else [-100] * len(ids)
    input_ids, labels = input_ids[:max_len], labels[:max_len]
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def encode_all(cfg: dict, tokenizer, rows: list, what: str) -> list:
    data, max_len = cfg["data"], cfg["strategies"]["max_seq_length"]
    template = chat_template(data)
    encoded = [encode(tokenizer, row, data["format"], max_len, template) for row in rows]
    examples = [e for e in encoded if any(label != -100 for label in e["labels"])]
    if not examples:
        raise JobError(f"{what}: every response was truncated away by max_seq_length={max_len}")
    dropped = [i + 1 for i, e in enumerate(encoded) if not any(label != -100 for label in e["labels"])]
    if dropped:
        named = ", ".join(map(str, dropped[:SHOWN_DROPPED])) + (" ..." if len(dropped) > SHOWN_DROPPED else "")
        log(f"{what}: dropped {len(dropped)} of {len(encoded)} rows whose response was truncated away by "
            f"max_seq_length={max_len} (rows {named})")
    return examples


# ---------------------------------------------------------------- packing


def pack(examples: list, max_len: int) -> list:
    """Samples packed into rows of at most max_len tokens (each sample whole, in order, first fit among the
    last PACK_WINDOW open rows). position_ids restart at each sample, and its first label is -100: that
    token is never predicted from the previous sample, as in an unpacked batch."""
    rows, open_rows = [], []
    for example in examples:
        size = len(example["input_ids"])
        target = next((r for r in open_rows if len(r["input_ids"]) + size <= max_len), None)
        if target is None:
            target = {"input_ids": [], "labels": [], "position_ids": []}
            rows.append(target)
            open_rows = (open_rows + [target])[-PACK_WINDOW:]
        target["input_ids"] += example["input_ids"]
        target["labels"] += [-100] + example["labels"][1:]
        target["position_ids"] += list(range(size))
    return rows


def as_rows(examples: list) -> list:
    """Unpacked samples in the packed layout, for eval batches through the same collator."""
    return [{"input_ids": e["input_ids"], "labels": [-100] + e["labels"][1:],
             "position_ids": list(range(len(e["input_ids"])))} for e in examples]


class PackedCollator:
    """Pads packed rows to the longest in the batch. There is no attention mask: transformers reads the
    samples' boundaries from the restarting position_ids and builds a block-diagonal causal mask (the
    padding is a sample of its own, with no labels). use_cache=False: with a cache it would not."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list) -> dict:
        width = max(len(f["input_ids"]) for f in features)
        batch = {"input_ids": [], "labels": [], "position_ids": []}
        for f in features:
            pad = width - len(f["input_ids"])
            batch["input_ids"].append(f["input_ids"] + [self.pad_id] * pad)
            batch["labels"].append(f["labels"] + [-100] * pad)
            batch["position_ids"].append(f["position_ids"] + list(range(pad)))
        return {**{k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}, "use_cache": False}


# ---------------------------------------------------------------- the job's data


def build_data(cfg: dict, tokenizer) -> tuple[list, list]:
    """(train rows, eval rows) as the Trainer reads them; every row is checked before the model loads."""
    data, max_len = cfg["data"], cfg["strategies"]["max_seq_length"]
    where = data["path"] or data["hub_id"]
    rows = read_rows(data, data["path"])
    rows, held = split_eval(rows, data["eval_fraction"], cfg["training"]["seed"])
    if data["eval_path"] is not None:
        held = read_rows(data, data["eval_path"])
    train = encode_all(cfg, tokenizer, rows, where)
    evaluation = encode_all(cfg, tokenizer, held, data["eval_path"] or where) if held else []
    if data["packing"]:
        packed = pack(train, max_len)
        log(f"packed {len(train)} samples into {len(packed)} rows of at most {max_len} tokens")
        return packed, as_rows(evaluation)
    return train, evaluation


def data_collator(cfg: dict, tokenizer):
    if cfg["data"]["packing"]:
        return PackedCollator(tokenizer.pad_token_id)
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)


def data_arguments(cfg: dict) -> dict:
    """TrainingArguments for eval and token counting."""
    steps = cfg["training"]["eval_steps"]
    evaluates = steps is not None and cfg["data"]["has_eval"]
    return {
        "eval_strategy": "steps" if evaluates else "no",
        "eval_steps": steps if evaluates else None,
        "per_device_eval_batch_size": cfg["training"]["micro_batch_size"],
        "prediction_loss_only": True,  # no logits kept across eval batches
        "label_names": ["labels"],  # a peft model hides the labels argument from Trainer's inspection
        # packed rows have no attention mask to count real tokens by: count every token (padding is rare)
        "include_num_input_tokens_seen": "all" if cfg["data"]["packing"] else "non_padding",
    }


STEPS.build_data = build_data
STEPS.data_collator = data_collator
STEPS.data_arguments = data_arguments
