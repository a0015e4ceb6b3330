"""The generated train.py's data parts (templates/script/data.py and rows.py), in-process on the tiny
model: every source, the row checks' messages, label masks token by token, the eval split, and packing
(loss equality with unpacked samples and attention kept inside each sample)."""

import json

import pytest

torch = pytest.importorskip("torch")
datasets = pytest.importorskip("datasets")

from qcompile.templates.script import core, data  # noqa: E402

SYSTEM = {"role": "system", "content": "You are terse."}
TURNS = [{"role": "user", "content": "Shout cat."}, {"role": "assistant", "content": "CAT!"},
         {"role": "user", "content": "Again."}, {"role": "assistant", "content": "cat"}]
TO_SHAREGPT = {"system": "system", "user": "human", "assistant": "gpt"}


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def model(model_dir):
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    return loaded.eval()


def data_cfg(**values) -> dict:
    base = {"path": None, "hub_id": None, "split": "train", "subset": None, "revision": None, "format": "alpaca",
            "columns": {}, "eval_fraction": 0.0, "eval_path": None, "has_eval": False, "packing": False,
            "chat_template": None}
    return {**base, **values}


def expected_labels(tokenizer, text: str, trained_spans: list[tuple[int, int]]) -> tuple[list, list]:
    """The ids of the whole text and its labels, from character spans: a token is trained when it starts
    inside a span (computed from the full text's offsets, independently of the part's piecewise encoding)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = [t if any(a <= start < b for a, b in trained_spans) else -100
              for t, (start, _) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)]
    return enc["input_ids"], labels


def chat_spans(tokenizer, messages: list) -> tuple[str, list]:
    """The rendered text and the character spans of each assistant reply with its end marker."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans, cursor = [], 0
    for message in messages:
        block = f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>\n"
        start = text.index(block, cursor)
        if message["role"] == "assistant":
            header = len(f"<|im_start|>{message['role']}\n")
            spans.append((start + header, start + len(block)))
        cursor = start + len(block)
    return text, spans


@pytest.mark.parametrize("system", [False, True], ids=["no-system", "system"])
@pytest.mark.parametrize("fmt", ["chat", "sharegpt"])
def test_chat_labels_token_by_token(tokenizer, fmt, system):
    messages = ([SYSTEM] if system else []) + TURNS
    if fmt == "chat":
        row = {"messages": messages}
    else:
        row = {"conversations": [{"from": TO_SHAREGPT[m["role"]], "value": m["content"]} for m in messages]}
    example = data.encode(tokenizer, data.check_row(row, fmt, {}), fmt, 512)
    text, spans = chat_spans(tokenizer, messages)
    ids, labels = expected_labels(tokenizer, text, spans)
    assert example["input_ids"] == ids
    assert example["labels"] == labels
    trained = tokenizer.decode([t for t in example["labels"] if t != -100])
    assert trained == "CAT!<|im_end|>\ncat<|im_end|>\n"


@pytest.mark.parametrize("with_input", [False, True], ids=["no-input", "input"])
def test_alpaca_labels_token_by_token(tokenizer, with_input):
    row = {"instruction": "Spell the word backwards.", "input": "cat" if with_input else "", "output": "tac"}
    example = data.encode(tokenizer, row, "alpaca", 512)
    prompt = (data.ALPACA_PROMPT if with_input else data.ALPACA_PROMPT_NO_INPUT).format(**row)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer("tac" + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    assert example["input_ids"] == prompt_ids + reply_ids
    assert example["labels"] == [-100] * len(prompt_ids) + reply_ids


def test_text_trains_everything_and_truncates(tokenizer):
    example = data.encode(tokenizer, {"text": "The cat is number 3. " * 20}, "text", 16)
    assert len(example["input_ids"]) == 16 and example["labels"] == example["input_ids"]


def test_named_chat_template_overrides_the_tokenizers(tokenizer):
    template = data.chat_template(data_cfg(format="chat", chat_template="llama3"))
    example = data.encode(tokenizer, {"messages": TURNS}, "chat", 512, template)
    text = tokenizer.decode(example["input_ids"])
    assert text.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>")
    assert tokenizer.decode([t for t in example["labels"] if t != -100]) == "CAT!<|eot_id|>cat<|eot_id|>"


ROWS = [{"q": f"Say {w}.", "a": w.upper()} for w in ("cat", "dog", "owl", "bee", "elk", "yak")]


def write_sources(folder) -> dict:
    """The same rows as parquet, CSV, JSON lines and a save_to_disk folder."""
    folder.mkdir(exist_ok=True)
    table = datasets.Dataset.from_list(ROWS)
    table.to_parquet(str(folder / "rows.parquet"))
    table.to_csv(str(folder / "rows.csv"), index=False)
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    datasets.DatasetDict({"train": table}).save_to_disk(str(folder / "saved"))
    return {name: str(folder / name) for name in ("rows.parquet", "rows.csv", "rows.jsonl", "saved")}


def test_every_source_reads_the_same_rows(tmp_path):
    columns = {"instruction": "q", "output": "a"}
    read = {name: data.read_rows(data_cfg(columns=columns), path) for name, path in write_sources(tmp_path).items()}
    expected = [{"instruction": r["q"], "input": None, "output": r["a"]} for r in ROWS]
    assert all(rows == expected for rows in read.values()), read


def test_bad_rows_named_for_every_source(tmp_path):
    sources = write_sources(tmp_path)
    with pytest.raises(core.JobError, match=r"rows\.parquet: row 1: missing key 'instruction' .*\n"
                                            r"  hint: map your column names with data\.columns"):
        data.read_rows(data_cfg(), sources["rows.parquet"])
    with pytest.raises(core.JobError, match=r"rows\.jsonl:1:1: missing key 'answer' \(data\.columns\.output\)"
                                            r" .*\(and 5 more bad rows\)"):
        data.read_rows(data_cfg(columns={"instruction": "q", "output": "answer"}), sources["rows.jsonl"])
    with pytest.raises(core.JobError, match=r"saved: no split 'test' \(has train\)"):
        data.read_rows(data_cfg(split="test"), sources["saved"])


def test_sharegpt_file_declared_as_chat_is_named(tmp_path):
    path = tmp_path / "sg.jsonl"
    path.write_text(json.dumps({"conversations": [{"from": "human", "value": "hi"}]}) + "\n")
    expected = (r"sg\.jsonl:1:1: missing key 'messages'.*\n"
                r"  hint: the row looks like the sharegpt format: set data\.format: sharegpt")
    with pytest.raises(core.JobError, match=expected):
        data.read_rows(data_cfg(format="chat"), str(path))


def test_eval_split_is_deterministic_under_the_seed():
    rows = list(range(100))
    train, held = data.split_eval(rows, 0.1, seed=7)
    assert len(held) == 10 and sorted(train + held) == rows
    assert data.split_eval(rows, 0.1, seed=7) == (train, held)
    assert data.split_eval(rows, 0.1, seed=8)[1] != held


def examples(tokenizer) -> list:
    rows = [{"instruction": f"Say {w} {i} times.", "input": "", "output": f"{w} " * (i + 1)}
            for i, w in enumerate(("cat", "dog", "owl", "bee", "elk"))]
    return [data.encode(tokenizer, row, "alpaca", 128) for row in rows]


def test_pack_keeps_samples_whole_and_restarts_positions(tokenizer):
    samples = examples(tokenizer)
    rows = data.pack(samples, 100)
    assert all(len(r["input_ids"]) <= 100 for r in rows) and len(rows) < len(samples)
    flat = [t for r in rows for t in r["input_ids"]]
    assert sorted(flat) == sorted(t for s in samples for t in s["input_ids"])
    for row in rows:
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
        assert all(row["labels"][i] == -100 for i in starts)  # never predicted from the previous sample


def test_packed_loss_equals_unpacked_loss(tokenizer, model):
    """One packed row of several samples gives the loss of the same samples in an ordinary padded batch
    (the mean over their response tokens), in fp32."""
    samples = examples(tokenizer)
    width = sum(len(s["input_ids"]) for s in samples)
    packed = data.PackedCollator(tokenizer.pad_token_id)(data.pack(samples, width))
    assert packed["input_ids"].shape == (1, width)
    unpacked = data.data_collator({"data": {"packing": False}}, tokenizer)(samples)
    with torch.no_grad():
        packed_loss = model(**packed).loss
        unpacked_loss = model(**{k: v for k, v in unpacked.items()}).loss
    assert abs(packed_loss.item() - unpacked_loss.item()) < 1e-5, (packed_loss, unpacked_loss)


def test_packed_attention_stays_inside_each_sample(tokenizer, model):
    """Each sample's logits in a packed row (padded, beside another row) equal its logits run alone; the
    same row with one sample's tokens changed leaves the others' logits unchanged."""
    samples = examples(tokenizer)
    rows = data.pack(samples, 100)
    batch = data.PackedCollator(tokenizer.pad_token_id)(rows)
    model.train()  # as in training: dropout is 0 in the tiny model, and no cache is built
    try:
        with torch.no_grad():
            logits = model(**batch).logits
            changed = {**batch, "input_ids": batch["input_ids"].clone()}
            first = len(samples[0]["input_ids"])
            changed["input_ids"][0, :first] = 7
            logits_changed = model(**changed).logits
            for r, row in enumerate(rows):
                offset = 0
                for start in [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["input_ids"])]:
                    if start > offset:
                        alone = model(input_ids=torch.tensor([row["input_ids"][offset:start]])).logits[0]
                        assert (logits[r, offset:start] - alone).abs().max() < 1e-4
                    offset = start
            assert (logits_changed[0, first:] - logits[0, first:]).abs().max() < 1e-4
            assert (logits_changed[0, :first] - logits[0, :first]).abs().max() > 1e-2
    finally:
        model.eval()


def test_position_ids_alone_need_no_cache(tokenizer, model):
    """With a cache (use_cache=True), transformers does not read packed position ids: the collator's
    use_cache=False is what makes them isolate the samples."""
    samples = examples(tokenizer)[:2]
    batch = data.PackedCollator(tokenizer.pad_token_id)(data.pack(samples, 128))
    first = len(samples[0]["input_ids"])
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([samples[1]["input_ids"]])).logits[0]
        isolated = model(**batch).logits[0, first:]
        leaked = model(**{**batch, "use_cache": True}).logits[0, first:]
    assert (isolated - alone).abs().max() < 1e-4
    assert (leaked - alone).abs().max() > 1e-2


def test_hub_dataset_offline_without_cache_is_one_clear_error(monkeypatch, tmp_path):
    """No network in tests: with HF_DATASETS_OFFLINE=1 and an empty cache, a hub id fails in one line."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(core.JobError, match=r"^nobody/no-such-set: cannot load the data: ") as caught:
        data.read_rows(data_cfg(hub_id="nobody/no-such-set"), None)
    assert "\n" not in str(caught.value)


def test_a_huge_row_is_cut_before_it_is_tokenized(tokenizer, monkeypatch):
    seen = []
    real = tokenizer.__class__.__call__

    def counting(self, text, **kwargs):
        seen.append(len(text))
        return real(self, text, **kwargs)

    monkeypatch.setattr(tokenizer.__class__, "__call__", counting)
    row = {"instruction": "Repeat.", "output": "word " * 2_000_000}  # 10 MB of response
    example = data.encode(tokenizer, row, "alpaca", 64)
    assert len(example["input_ids"]) == 64 and max(seen) <= 64 * data.MAX_CHARS_PER_TOKEN


def test_rows_truncated_away_are_counted_and_named(tokenizer, capsys):
    long_prompt = {"instruction": "x " * 400, "output": "ok"}
    rows = [{"instruction": "Say hi.", "output": "hi"}, long_prompt, long_prompt]
    cfg = {"data": data_cfg(), "strategies": {"max_seq_length": 128}}
    examples = data.encode_all(cfg, tokenizer, rows, "train.jsonl")
    assert len(examples) == 1
    assert "train.jsonl: dropped 2 of 3 rows whose response was truncated away by max_seq_length=128 (rows 2, 3)" \
        in capsys.readouterr().out
