"""The YAML training config, validated by pydantic before anything runs or is written: a typo, a
negative learning rate or an empty file is an error naming the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import SageError
from ..student.configuration_sage import PresetName, SageConfig


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    task_lr: float = Field(1e-2, gt=0, le=10.0)  # per-task embeddings (sparse Adam)
    weight_decay: float = Field(0.1, ge=0)
    warmup: int = Field(200, ge=0)
    decay_fraction: float = Field(0.2, gt=0, le=1.0)  # warm-up, stable, then linear decay to 0
    grad_clip: float = Field(1.0, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1.0)


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

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        try:
            self.model_config_()
        except ValidationError as e:
            first = e.errors()[0]
            raise ValueError(f"model.{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        if any(not 0 < f < 1 for f in self.snapshots):
            raise ValueError("snapshots are fractions of the schedule, each strictly between 0 and 1")
        return self

    def model_config_(self, num_tasks: int = 0) -> SageConfig:
        return SageConfig(**{**SageConfig.preset(self.preset).model_dump(), **self.model, "num_tasks": num_tasks})


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SageError(f"{path}: cannot read config: {e}") from None
    if not isinstance(raw, dict) or not raw:
        raise SageError(f"{path}: a training config is a non-empty YAML mapping")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise SageError(f"{path}: --set {dotted}: '{p}' is not a section")
        node[leaf] = value
    try:
        return TrainConfig(**raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "config"
        raise SageError(f"{path}: {where}: {first['msg']}") from None


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`--set optim.steps=100` style overrides; values are parsed as YAML (numbers, lists...)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise SageError(f"--set expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out
