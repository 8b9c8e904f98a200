"""The YAML training config of the ARC model and its students, validated by pydantic (through the one
loader, `utils.config`) before anything runs or is written: a typo, a negative learning rate or an
empty file is an error naming the file and the field.

Distillation is part of any config: `teacher:` names a frozen teacher and `losses:` the weighted
terms (`distill.losses`); without them the run trains on the task loss alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from ..distill.losses import LOSSES
from ..student.configuration_sage import PresetName, SageConfig
from ..utils.config import Strict
from ..utils.config import load_config as load_yaml_config


class TeacherSection(Strict):
    """A frozen teacher: `sage` (a SAGE model folder: logits and hidden states on the student's own
    rows), `store` (a feature store from `sage-distill extract`: features of each pair's input grid),
    `hf` / `groot` (such a teacher run online on the input grids), `policy` (a control policy, robots)."""

    kind: Literal["sage", "store", "hf", "groot", "policy"]
    path: str = Field(min_length=1)  # its folder
    tokenizer: str | None = None  # groot: a local Qwen3 tokenizer folder
    layer: int | None = None  # hf: hidden_states index; groot: LM layers run
    pool: str = "grid"  # hf, groot: grid | KxK
    dtype: Literal["float32", "bfloat16"] | None = None  # default: bf16 autocast on a GPU, float32 on a CPU


class LossSpec(Strict):
    """One term of `losses:`; its other keys are the term's options."""

    model_config = {"extra": "allow"}
    name: str
    weight: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _known(self) -> LossSpec:
        if self.name not in LOSSES:
            raise ValueError(f"unknown loss '{self.name}'; known: {', '.join(sorted(LOSSES))}")
        return self


class DataConfig(Strict):
    # Every pair (demonstrations and tests) of these sets is trained on, after decontamination.
    training: list[tuple[str, str]] = [("arc1", "training")]
    # The sets the run will be scored on: decontamination drops every training task that touches
    # them, and (with include_eval_demos, the transductive protocol) their demonstrations are used.
    evaluation: list[tuple[str, str]] = [("arc1", "evaluation"), ("arc2", "evaluation")]
    include_eval_demos: bool = True


class OptimConfig(Strict):
    steps: int = Field(4000, gt=0)
    rows: int = Field(8, gt=0)  # packed rows per step and rank
    row_len: int = Field(8192, ge=64)  # tokens per row; one pair is at most 1,863 tokens
    lr: float = Field(1e-3, gt=0, le=1.0)
    task_lr: float = Field(1e-2, gt=0, le=10.0)  # the per-task rows (their own AdamW group, no weight decay)
    weight_decay: float = Field(0.1, ge=0)
    warmup: int = Field(200, ge=0)
    decay_fraction: float = Field(0.2, gt=0, le=1.0)  # warm-up, stable, then linear decay to 0
    grad_clip: float = Field(1.0, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1.0)
    schedule: Literal["wsd", "cosine"] = "wsd"
    # Train this many minutes, the schedule running on the wall clock (arms compared at equal GPU minutes);
    # `steps` is then an upper bound.
    minutes: float | None = Field(None, gt=0)


class TrainConfig(Strict):
    out_dir: str = "runs/sage-large"
    preset: PresetName = "large"
    model: dict[str, Any] = Field(default_factory=dict)  # overrides of the preset
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    seed: int = Field(0, ge=0)
    log_every: int = Field(25, gt=0)
    checkpoint_every: int = Field(500, gt=0)
    snapshots: list[float] = [0.25, 0.5]  # also keep the EMA model at these fractions of the schedule
    max_minutes: float | None = Field(None, gt=0)  # stop (with a checkpoint) after this wall time
    compile: bool = False
    workers: int = Field(0, ge=0)  # data-loader processes
    teacher: TeacherSection | None = None
    losses: list[LossSpec] = Field(default_factory=lambda: [LossSpec(name="task")])

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        try:
            self.model_config_()
        except ValidationError as e:
            first = e.errors()[0]
            raise ValueError(f"model.{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        if any(not 0 < f < 1 for f in self.snapshots):
            raise ValueError("snapshots are fractions of the schedule, each strictly between 0 and 1")
        names = [x.name for x in self.losses]
        if len(set(names)) != len(names):
            raise ValueError(f"losses: a term is listed twice ({', '.join(names)})")
        if not names:
            raise ValueError("losses: name at least one term (e.g. [{name: task}])")
        return self

    def loss_spec(self) -> list[dict[str, Any]]:
        return [x.model_dump() for x in self.losses]

    def model_config_(self, num_tasks: int = 0) -> SageConfig:
        return SageConfig(**{**SageConfig.preset(self.preset).model_dump(), **self.model, "num_tasks": num_tasks})


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    return load_yaml_config(TrainConfig, path, overrides, what="training config")
