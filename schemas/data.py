"""`data:` the training set: where it comes from (a local file or folder, or a hub dataset), its format,
column names, an eval split, packing and the chat template."""

from typing import Literal

from pydantic import Field, model_validator

from ._base import PathStr, Section

FORMATS = ("alpaca", "chat", "sharegpt", "text")
# The fields each format reads; `data.columns` may rename only these.
FORMAT_FIELDS = {
    "alpaca": ("instruction", "input", "output"),
    "chat": ("messages",),
    "sharegpt": ("conversations",),
    "text": ("text",),
}
NAMED_TEMPLATES = ("chatml", "llama3")


class ColumnsSpec(Section):
    """The file's column for each field a format reads; unset fields keep their own name."""

    instruction: str | None = Field(None, description="Column holding the alpaca instruction.")
    input: str | None = Field(None, description="Column holding the alpaca input (optional in each row).")
    output: str | None = Field(None, description="Column holding the alpaca output (the response).")
    messages: str | None = Field(None, description="Column holding the chat messages (role/content).")
    conversations: str | None = Field(None, description="Column holding the ShareGPT turns (from/value).")
    text: str | None = Field(None, description="Column holding the text format's text.")

    def mapping(self) -> dict[str, str]:
        """{format field: file column} for the fields that are renamed."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class DataSpec(Section):
    path: PathStr | None = Field(
        None,
        description="A local .jsonl, .json, .parquet or .csv file, or a folder written by datasets' save_to_disk; "
        "relative paths are read from the spec's folder. Give path or hub_id.",
    )
    hub_id: str | None = Field(
        None, min_length=1, max_length=200,
        description="A Hugging Face hub dataset id, loaded through `datasets` and cached "
        "(HF_DATASETS_OFFLINE=1 uses the cache only).")
    split: str = Field("train", min_length=1, max_length=200,
                       description="Split to train on (hub datasets and save_to_disk folders holding several).")
    subset: str | None = Field(None, min_length=1, max_length=200,
                               description="Hub dataset configuration (subset) name.")
    revision: str | None = Field(None, min_length=1, max_length=200,
                                 description="Hub dataset revision (branch, tag or commit).")
    format: Literal["alpaca", "chat", "sharegpt", "text"] = Field(
        "alpaca",
        description="alpaca: instruction/input/output; chat: messages with role/content; sharegpt: conversations "
        "with from/value (human/gpt/system or user/assistant); text: a text field. Loss is on the responses only "
        "for alpaca, chat and sharegpt.",
    )
    columns: ColumnsSpec | None = Field(
        None, description="Column names of your data for the format's fields, e.g. {instruction: prompt}.")
    eval_fraction: float = Field(
        0.0, ge=0, le=0.5,
        description="Share of the rows held out for eval loss (0 to 0.5), chosen by training.seed.")
    eval_path: PathStr | None = Field(
        None, description="A separate eval file or folder (same format and columns); excludes eval_fraction.")
    packing: bool = Field(
        False,
        description="Pack several samples into each max_seq_length row; attention stays inside each sample.")
    chat_template: str | None = Field(
        None, min_length=1, max_length=4096,
        description="Chat template for chat and sharegpt: a Jinja file path, or chatml or llama3; "
        "null keeps the tokenizer's.")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.hub_id is None):
            raise ValueError("give exactly one of data.path (a local file or folder) and data.hub_id")
        if self.eval_fraction and self.eval_path is not None:
            raise ValueError("give data.eval_fraction or data.eval_path, not both")
        if self.chat_template is not None and self.format not in ("chat", "sharegpt"):
            raise ValueError(f"data.chat_template applies to the chat and sharegpt formats, not {self.format}")
        if self.columns is not None:
            extra = sorted(set(self.columns.mapping()) - set(FORMAT_FIELDS[self.format]))
            if extra:
                raise ValueError(f"data.columns maps {', '.join(extra)}, which the {self.format} format does not "
                                 f"read (it reads {', '.join(FORMAT_FIELDS[self.format])})")
        return self

    @property
    def has_eval(self) -> bool:
        return bool(self.eval_fraction) or self.eval_path is not None
