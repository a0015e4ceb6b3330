"""Real runs (CPU, tiny model, through emit and launch.sh) from every data source: parquet with mapped
columns and a CSV eval file, a save_to_disk folder of ShareGPT rows packed into rows with an eval
fraction; eval_loss logged every eval_steps and equal to a hand computation. JSON lines runs are in
test_train_runs.py."""

import json

import pytest

torch = pytest.importorskip("torch")
datasets = pytest.importorskip("datasets")

from qcompile.templates.script import data  # noqa: E402

from .jobs import EXAMPLES, compile_job, launch, metrics  # noqa: E402

pytestmark = pytest.mark.slow

ONE_PROCESS = {"hardware": {"device_memory": "1GiB"},
               "strategies": {"offload": {"optimizer": "none", "params": "none"}}}


def run(tmp_path, data_section: dict, training: dict) -> tuple:
    training = {"output_dir": str(tmp_path / "out"), "micro_batch_size": 1, "gradient_accumulation_steps": 2,
                "logging_steps": 1, "save_steps": 100, **training}
    job = compile_job(tmp_path, "naive-mp-cpu.yaml", data=data_section, training=training, **ONE_PROCESS)
    lines = []
    result = launch(job, echo=lines.append)
    assert result.returncode == 0, "\n".join(lines[-40:])
    return tmp_path / "out", lines, json.loads((job.build_dir / "train_config.json").read_text())


def alpaca_rows() -> list:
    rows = [json.loads(line) for line in (EXAMPLES / "data" / "alpaca.jsonl").read_text().splitlines()]
    return [{"prompt": r["instruction"], "context": r.get("input", ""), "answer": r["output"]} for r in rows]


def hand_eval_loss(output_dir, model_dir, config: dict, rows: list) -> float:
    """Mean over the eval rows of each row's loss (eval batches of one), with the saved adapter."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(output_dir)).eval()
    fmt, max_len = config["data"]["format"], config["strategies"]["max_seq_length"]
    losses = []
    with torch.no_grad():
        for row in rows:
            example = data.encode(tokenizer, data.check_row(row, fmt, config["data"]["columns"]), fmt, max_len)
            ids = torch.tensor([example["input_ids"]])
            losses.append(model(input_ids=ids, labels=torch.tensor([example["labels"]])).loss.item())
    return sum(losses) / len(losses)


def test_parquet_with_mapped_columns_and_csv_eval(tmp_path, model_dir):
    rows = alpaca_rows()
    datasets.Dataset.from_list(rows[:48]).to_parquet(str(tmp_path / "train.parquet"))
    datasets.Dataset.from_list(rows[48:54]).to_csv(str(tmp_path / "eval.csv"), index=False)
    columns = {"instruction": "prompt", "input": "context", "output": "answer"}
    output_dir, lines, config = run(
        tmp_path, {"path": str(tmp_path / "train.parquet"), "format": "alpaca", "columns": columns,
                   "eval_path": str(tmp_path / "eval.csv")},
        {"max_steps": 4, "eval_steps": 2})
    records = metrics(output_dir)
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert any("| eval_loss " in line for line in lines)
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 4 and all(loss > 0 for loss in losses)
    csv_rows = datasets.load_dataset("csv", data_files=str(tmp_path / "eval.csv"), split="train").to_list()
    expected = hand_eval_loss(output_dir, model_dir, config, csv_rows)
    assert evals[-1]["eval_loss"] == pytest.approx(expected, abs=1e-4)


def test_sharegpt_folder_packed_with_eval_fraction(tmp_path, model_dir):
    chat = [json.loads(line) for line in (EXAMPLES / "data" / "chat.jsonl").read_text().splitlines()]
    spelled = {"system": "system", "user": "human", "assistant": "gpt"}
    turns = [{"conversations": [{"from": spelled[m["role"]], "value": m["content"]} for m in r["messages"]]}
             for r in chat]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(turns)}).save_to_disk(str(tmp_path / "saved"))
    output_dir, lines, config = run(
        tmp_path, {"path": str(tmp_path / "saved"), "format": "sharegpt", "packing": True, "eval_fraction": 0.125},
        {"max_steps": 2, "eval_steps": 2})
    packed = next(line for line in lines if line.startswith("packed "))
    samples, packed_rows = int(packed.split()[1]), int(packed.split()[4])
    assert samples == 56 and packed_rows < 0.75 * samples, packed  # 64 rows, 8 held out; short ones share rows
    records = metrics(output_dir)
    assert [r["step"] for r in records if "eval_loss" in r] == [2]
    _, held = data.split_eval(turns, 0.125, config["training"]["seed"])
    eval_loss = next(r["eval_loss"] for r in records if "eval_loss" in r)
    assert eval_loss == pytest.approx(hand_eval_loss(output_dir, model_dir, config, held), abs=1e-4)
