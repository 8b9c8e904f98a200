"""The YAML training config, validated by pydantic so a typo is an error, not a silent default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import SageError
from ..student.configuration_sage import PresetName, SageConfig


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(Strict):
    training: list[tuple[str, str]] = [("arc1", "training"), ("arc2", "training")]
    # The evaluation sets the run will be scored on: decontamination drops every training task that
    # touches them, and (with include_eval_demos) their demonstration pairs are trained on.
    evaluation: list[tuple[str, str]] = [("arc1", "evaluation"), ("arc2", "evaluation")]
    include_eval_demos: bool = True
    variants: int = 16
    keep_background: bool = True
    translate: bool = True


class OptimConfig(Strict):
    steps: int = 20000
    batch_size: int = 256  # global, split across ranks
    lr: float = 1e-3
    code_lr: float = 1e-2
    weight_decay: float = 0.1
    warmup: int = 500
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    train_steps: int | None = None  # refinement steps per example in training (default: max_steps)


class TrainConfig(Strict):
    out_dir: str = "runs/sage-small"
    preset: PresetName = "small"
    model: dict[str, Any] = Field(default_factory=dict)  # overrides of the preset
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    losses: list[dict[str, Any]] = Field(default_factory=lambda: [{"name": "task", "weight": 1.0},
                                                                   {"name": "halt", "weight": 0.1}])
    teacher: dict[str, Any] | None = None
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 1000
    max_minutes: float | None = None  # stop (with a checkpoint) after this wall time, for leases
    compile: bool = False

    def model_config_(self) -> SageConfig:
        return SageConfig(**{**SageConfig.preset(self.preset).model_dump(), **self.model})


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SageError(f"{path}: cannot read config: {e}") from None
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    try:
        return TrainConfig(**raw)
    except ValidationError as e:
        raise SageError(f"{path}: invalid config: {e}") from None


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`--set optim.steps=100` style overrides; values are parsed as YAML (numbers, lists...)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise SageError(f"--set expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out
