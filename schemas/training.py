"""`training:` the optimisation loop."""

from typing import Literal

from pydantic import Field, create_model, field_validator

from qcompile.strategies import section_fields

from ._base import PathStr, Section

MAX_BATCH = 65_536  # samples per device, or micro-batches per step: far beyond any real job
MAX_STEPS = 10**9
MAX_SEED = 2**32 - 1  # numpy and torch.cuda accept seeds up to this


class _TrainingSpecBase(Section):
    micro_batch_size: int = Field(1, ge=1, le=MAX_BATCH, description="Samples per device per forward pass.")
    gradient_accumulation_steps: int = Field(1, ge=1, le=MAX_BATCH,
                                             description="Micro-batches summed before each optimizer step.")
    global_batch_size: int | None = Field(
        None,
        ge=1,
        le=2**40,
        description="Optional check: must equal micro_batch_size x gradient_accumulation_steps x data-parallel ranks.",
    )
    epochs: int = Field(1, ge=1, le=100_000, description="Passes over the data (max_steps wins when set).")
    max_steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="Stop after this many optimizer steps.")
    learning_rate: float = Field(2.0e-4, gt=0, le=1, description="Peak AdamW learning rate, in (0, 1].")
    weight_decay: float = Field(0.0, ge=0, le=1, description="AdamW weight decay, in [0, 1].")
    warmup_steps: int = Field(0, ge=0, le=MAX_STEPS, description="Linear warm-up steps.")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field("linear", description="Learning-rate schedule.")
    seed: int = Field(42, ge=0, le=MAX_SEED,
                      description="Seed for torch, Python and data order on every rank; 0 to 2**32 - 1.")
    output_dir: PathStr = Field(description="Where checkpoints, metrics and the final adapter go.")
    save_steps: int = Field(100, ge=1, le=MAX_STEPS, description="Save a resumable checkpoint every this many steps.")
    logging_steps: int = Field(10, ge=1, le=MAX_STEPS, description="Log loss and throughput every this many steps.")
    eval_steps: int | None = Field(None, ge=1, le=MAX_STEPS,
                                   description="Compute eval_loss every this many steps (needs data.eval_fraction "
                                   "or data.eval_path); null: no eval.")
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list, max_length=3,
        description="Experiment trackers the Trainer reports to (its own integrations): tensorboard writes under "
        "output_dir/logs; wandb and mlflow follow their usual environment (WANDB_MODE, MLFLOW_TRACKING_URI). "
        "Empty: none.")
    run_name: str | None = Field(None, min_length=1, max_length=200,
                                 description="The run's name in the trackers [default: the spec file's name].")

    @field_validator("report_to")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names a tracker twice")
        return value


TrainingSpec = create_model(
    "TrainingSpec",
    __base__=_TrainingSpecBase,
    __doc__=_TrainingSpecBase.__doc__,
    **section_fields("training"),
)
