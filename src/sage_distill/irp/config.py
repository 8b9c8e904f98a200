"""orchestrator.yaml, validated. Every field has a default; configs/orchestrator.yaml lists them."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import SageError
from .metabolic import Thresholds


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HaltSettings(_Strict):
    eps: float = 1e-3
    converge_k: int = 2
    patience: int = 3


class TrustSettings(_Strict):
    initial: float = 0.5
    rate_convergence: float = 0.2
    rate_truth: float = 0.35


class OrchestratorSettings(_Strict):
    base_budget: float = 2000.0  # ATP (= ms of plugin compute) per cycle in WAKE
    reserve_capacity: float = 8000.0
    floor: float = 0.1  # least share of a cycle's budget any active plugin gets
    perception_budget: float = 500.0  # ATP for each perception plugin (vision, memory retrieval)
    concurrent: bool = False  # run active plugins' steps in threads (lockstep rounds)
    max_workers: int = 4
    dream_experiences: int = 16  # how many of the most salient memories DREAM replays
    halt: HaltSettings = Field(default_factory=HaltSettings)
    trust: TrustSettings = Field(default_factory=TrustSettings)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    salience_weights: dict[str, float] = Field(default_factory=lambda: {
        "surprise": 1.0, "novelty": 1.0, "arousal": 1.0, "reward": 1.0, "conflict": 1.0})


class ArcSolverSettings(_Strict):
    enabled: bool = True
    variants: int = 4  # augmented views of each task, voted
    max_steps: int | None = None  # None: the model's max_steps
    energy_threshold: float = 0.0  # halt once mean energy < this (halting head: P(final) > 0.5)
    fit_steps: int = 30  # gradient steps to fit the codes of an unseen task from its demonstrations
    fit_lr: float = 0.05
    dream_steps: int = 60  # gradient steps per DREAM replay (budget permitting)
    dream_model_lr: float = 0.0  # > 0 also fine-tunes the model's weights in DREAM


class VisionSettings(_Strict):
    enabled: bool = True
    eps: float = 0.02  # relative change of the running embedding counted as converged


class MemoryRetrievalSettings(_Strict):
    enabled: bool = True
    k: int = 5
    chunk: int = 256  # stored embeddings scanned per step


class SpeechSettings(_Strict):
    enabled: bool = False
    voice: str = "en"


class PluginSettings(_Strict):
    arc_solver: ArcSolverSettings = Field(default_factory=ArcSolverSettings)
    vision: VisionSettings = Field(default_factory=VisionSettings)
    memory_retrieval: MemoryRetrievalSettings = Field(default_factory=MemoryRetrievalSettings)
    speech: SpeechSettings = Field(default_factory=SpeechSettings)


class StreamSettings(_Strict):
    idle_every: int = 0  # after this many tasks, insert idle cycles (0: never)
    idle_cycles: int = 0


class RunConfig(_Strict):
    model: str | None = None  # SAGE model folder; --model overrides
    device: str = "cpu"
    seed: int = 0
    memory: str = "memory.sqlite"  # relative paths are inside --out
    orchestrator: OrchestratorSettings = Field(default_factory=OrchestratorSettings)
    plugins: PluginSettings = Field(default_factory=PluginSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)


def load_config(path: str | Path | None) -> RunConfig:
    if path is None:
        return RunConfig()
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise SageError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise SageError(f"{path}: not valid YAML: {e}") from None
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SageError(f"{path}: {where}: {first['msg']}") from None
