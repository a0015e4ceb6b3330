"""Hostile inputs, one per line of CASES: each must end in exit 1 with one clear error and no traceback,
and leave the disk as it was. `edits` set spec keys (dotted; `{work}` is the workspace folder), `raw`
sets keys to YAML text written as is, `config` overrides the model's config.json, `files` are created
in the workspace first (bytes, or None for a folder)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Case:
    name: str
    command: str  # validate | emit | run | dry-run | resume
    expect: str  # a substring of the one error line
    edits: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)
    config: dict | None = None
    files: dict = field(default_factory=dict)


VICTIM = {"victim/README.md": b"my notes\n", "victim/tokenizer.json": b"{}\n"}
OFFLOAD = {"backend": {"kind": "accelerate-offload", "offload_folder": "offload"}}


def offload(folder: str) -> dict:
    return {"backend": {"kind": "accelerate-offload", "offload_folder": folder}}


CASES = [
    # --- where a run writes: output_dir ------------------------------------------------------------
    Case("out_root", "validate", "the filesystem root", {"training.output_dir": "/"}),
    Case("out_etc", "emit", "/etc is a system directory", {"training.output_dir": "/etc"}),
    Case("out_under_usr", "validate", "system directory", {"training.output_dir": "/usr/local/share/run"}),
    Case("out_var", "validate", "system directory", {"training.output_dir": "/var"}),
    Case("out_dotdot_root", "validate", "the filesystem root", {"training.output_dir": "../" * 40}),
    Case("out_dotdot_etc", "run", "system directory", {"training.output_dir": "runs/" + "../" * 40 + "etc"}),
    Case("out_home", "validate", "your home directory", {"training.output_dir": "~"}),
    Case("out_home_abs", "dry-run", "your home directory", {"training.output_dir": "{work}/home"}),
    Case("out_unknown_user", "validate", "no such user", {"training.output_dir": "~nosuchuser-qc/run"}),
    Case("out_model_dir", "validate", "is the model's folder", {"training.output_dir": "models/tiny-qwen2"}),
    Case("out_model_parent", "run", "holds the model's folder", {"training.output_dir": "models"}),
    Case("out_is_data_file", "validate", "is not a directory", {"training.output_dir": "data/train.jsonl"}),
    Case("out_data_folder", "run", "holds the data file", {"training.output_dir": "data"}),
    Case("out_below_a_file", "validate", "is a file", {"training.output_dir": "data/train.jsonl/run"}),
    Case("out_spec_folder", "run", "training.output_dir", {"training.output_dir": "."}),
    Case("out_existing_file", "run", "is not a directory", {"training.output_dir": "notes.txt"},
         files={"notes.txt": b"mine\n"}),
    Case("out_foreign_dir", "run", "holds no qcompile run", {"training.output_dir": "victim"}, files=VICTIM),
    Case("out_foreign_dir_resume", "resume", "holds no qcompile run", {"training.output_dir": "victim"},
         files=VICTIM),
    Case("out_foreign_dry_run", "dry-run", "holds no qcompile run", {"training.output_dir": "victim"}, files=VICTIM),
    Case("out_foreign_hidden_file", "run", "holds no qcompile run", {"training.output_dir": "victim"},
         files={"victim/.env": b"TOKEN=1\n"}),
    Case("out_fake_marker", "run", "holds no qcompile run", {"training.output_dir": "victim"},
         files={**VICTIM, "victim/.qcompile-run.json": b"{\"generator\": \"someone-else\"}"}),
    # --- where a run writes: the offload folder -----------------------------------------------------
    Case("offload_dotdot", "validate", "outside training.output_dir", offload("../..")),
    Case("offload_dotdot_deep", "emit", "outside training.output_dir", offload("a/../../../..")),
    Case("offload_etc", "validate", "system directory", offload("/etc")),
    Case("offload_root", "validate", "filesystem root", offload("/")),
    Case("offload_model", "validate", "model's folder", offload("{work}/models/tiny-qwen2")),
    Case("offload_holds_output", "validate", "(or holds) training.output_dir", offload("{work}/runs")),
    Case("offload_foreign", "run", "offload folder", offload("{work}/victim"), files=VICTIM),
    Case("offload_long_name", "validate", "longer than 255 bytes", offload("o" * 300)),
    Case("offload_nul", "validate", "NUL character", raw={"backend.offload_folder": '"off\\0load"'}),
    Case("offload_data", "validate", "holds the data file", offload("{work}/data")),
    # --- numbers ------------------------------------------------------------------------------------
    Case("lr_inf", "validate", "finite number", raw={"training.learning_rate": ".inf"}),
    Case("lr_1e400", "run", "finite number", raw={"training.learning_rate": "1e400"}),
    Case("lr_nan", "validate", "finite number", raw={"training.learning_rate": ".nan"}),
    Case("lr_negative", "validate", "greater than 0", {"training.learning_rate": -0.001}),
    Case("lr_absurd", "validate", "less than or equal to 1", {"training.learning_rate": 50.0}),
    Case("alpha_inf", "emit", "finite number", raw={"lora.alpha": "-.inf"}),
    Case("weight_decay_overflow", "validate", "finite number", raw={"training.weight_decay": "1.0e+999"}),
    Case("dropout_one", "validate", "less than 1", {"lora.dropout": 1.0}),
    Case("r_true", "validate", "not a boolean", raw={"lora.r": "true"}),
    Case("epochs_yes", "validate", "not a boolean", raw={"training.epochs": "yes"}),
    Case("alpha_false", "validate", "not a boolean", raw={"lora.alpha": "off"}),
    Case("seed_2_32", "validate", "less than or equal to 4294967295", {"training.seed": 2**32}),
    Case("seed_negative", "validate", "greater than or equal to 0", {"training.seed": -1}),
    Case("seed_hex_5000", "validate", "too large", raw={"training.seed": "0x" + "f" * 5000}),
    Case("seed_5000_digits", "validate", "cannot read this value", raw={"training.seed": "9" * 5000}),
    Case("nodes_1e7", "validate", "less than or equal to 1024", {"hardware.nodes": 10**7}),
    Case("devices_huge", "validate", "less than or equal to 256", {"hardware.devices_per_node": 100_000}),
    Case("world_size_huge", "validate", "at most 8192", {"hardware.nodes": 1024, "hardware.devices_per_node": 64}),
    Case("seq_len_huge", "validate", "less than or equal to", {"strategies.max_seq_length": 10**12}),
    Case("memory_5000_digits", "validate", "as a size", {"hardware.device_memory": "9" * 5000 + "GiB"}),
    Case("memory_exabytes", "validate", "larger than 1 EiB", {"hardware.host_memory": "99999999TiB"}),
    Case("layers_negative", "validate", "greater than or equal to 0", {"lora.layers": [-1]}),
    Case("micro_batch_zero", "validate", "greater than or equal to 1", {"training.micro_batch_size": 0}),
    Case("bucket_bool", "validate", "not a boolean", {"backend": {"kind": "deepspeed-zero3",
                                                                 "max_live_parameters": True}}),
    # --- impossible architectures -------------------------------------------------------------------
    Case("cfg_hidden_zero", "validate", "hidden_size: is 0", config={"hidden_size": 0}),
    Case("cfg_heads_zero", "validate", "num_attention_heads: is 0", config={"num_attention_heads": 0}),
    Case("cfg_layers_1e9", "validate", "num_hidden_layers: is 1000000000", config={"num_hidden_layers": 10**9}),
    Case("cfg_heads_do_not_divide", "validate", "do not divide hidden_size", config={"num_attention_heads": 3}),
    Case("cfg_kv_heads_do_not_divide", "emit", "do not divide num_attention_heads",
         config={"num_key_value_heads": 3}),
    Case("cfg_vocab_zero", "run", "vocab_size: is 0", config={"vocab_size": 0}),
    Case("cfg_negative", "validate", "intermediate_size: is -128", config={"intermediate_size": -128}),
    Case("cfg_string", "validate", "hidden_size: must be a whole number", config={"hidden_size": "64"}),
    Case("cfg_bool", "validate", "num_hidden_layers: must be a whole number", config={"num_hidden_layers": True}),
    Case("cfg_auto_deep_json", "validate", "cannot read", {"backend": "auto"}, files={"deep.json": b"[" * 100_000},
         raw={"model.config": "deep.json"}),
    # --- paths and data the job would only trip over after launch -----------------------------------
    Case("data_path_5000", "validate", "longer than 4096 bytes", {"data.path": "a" * 5000}),
    Case("model_name_long_part", "validate", "longer than 255 bytes", {"model.name": "x" * 300}),
    Case("output_nul", "validate", "NUL character", raw={"training.output_dir": '"runs/a\\0b"'}),
    Case("data_is_dir", "validate", "is a directory", {"data.path": "data"}),
    Case("data_not_utf8", "emit", "data/bad.jsonl:2: not UTF-8", {"data.path": "data/bad.jsonl"},
         files={"data/bad.jsonl": b'{"instruction": "a", "output": "b"}\n{"instruction": "\xff\xfe"}\n'}),
    Case("data_missing_run", "run", "does not exist", {"data.path": "data/nope.jsonl"}),
    Case("data_missing_dry_run", "dry-run", "does not exist", {"data.path": "data/nope.jsonl"}),
    Case("data_device", "validate", "not a regular file", {"data.path": "/dev/zero"}),
    Case("data_empty", "run", "is empty", {"data.path": "data/empty.jsonl"}, files={"data/empty.jsonl": b""}),
]
