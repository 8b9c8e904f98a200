"""orchestrator.yaml, validated. Every field has a default; configs/orchestrator.yaml lists them.

Every value carries its constraint (positive, in range, one of the choices); `load_config` turns the
first violation into a ConfigError `<file>: <field.path>: <problem>` before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..utils.config import load_config as load_yaml_config
from .metabolic import Thresholds

Pos = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Unit = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class HaltSettings(_Strict):
    eps: NonNeg = 1e-3
    converge_k: int = Field(2, ge=1, le=1000)
    patience: int = Field(3, ge=1, le=1000)


class TrustSettings(_Strict):
    initial: Unit = 0.5
    rate_convergence: Unit = 0.2
    rate_truth: Unit = 0.35


class OrchestratorSettings(_Strict):
    base_budget: Pos = 2000.0  # ATP (= ms of plugin compute) per cycle in WAKE
    reserve_capacity: Pos = 8000.0
    floor: Unit = 0.1  # least share of a cycle's budget any active plugin gets
    perception_budget: NonNeg = 500.0  # ATP for each perception plugin (vision, memory retrieval)
    concurrent: bool = False  # run active plugins' steps in threads (lockstep rounds)
    max_workers: int = Field(4, ge=1, le=256)
    dream_experiences: int = Field(16, ge=0, le=100_000)  # most salient memories DREAM replays
    halt: HaltSettings = Field(default_factory=HaltSettings)
    trust: TrustSettings = Field(default_factory=TrustSettings)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    salience_weights: dict[str, NonNeg] = Field(default_factory=lambda: {
        "surprise": 1.0, "novelty": 1.0, "arousal": 1.0, "reward": 1.0, "conflict": 1.0})

    @field_validator("salience_weights")
    @classmethod
    def _snarc_keys(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - {"surprise", "novelty", "arousal", "reward", "conflict"})
        if unknown:
            raise ValueError(f"unknown SNARC dimension(s) {unknown}; use surprise, novelty, arousal, reward, conflict")
        return v


class ArcSolverSettings(_Strict):
    enabled: bool = True
    max_views: int = Field(16, ge=1, le=1024)  # augmented views per test input at most
    views_per_step: int = Field(4, ge=1, le=1024)  # views per test input decoded in one IRP step
    energy_threshold: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)  # also halt once the
    # vote's disagreement is at most this after min_views views (null: only when the top two settle)
    min_views: int = Field(8, ge=1, le=1024)
    adapt_steps: int = Field(4, ge=0, le=100_000)  # gradient steps for a task the model has no row for
    adapt_steps_per_call: int = Field(1, ge=1, le=100_000)  # of them per IRP step (the budget stops between)
    adapt_lr: Pos = 1e-2
    dream_steps: int = Field(2, ge=0, le=100_000)  # adaptation steps per stored task per DREAM call


class VisionSettings(_Strict):
    enabled: bool = True
    eps: NonNeg = 0.02  # relative change of the running embedding counted as converged


class MemoryRetrievalSettings(_Strict):
    enabled: bool = True
    k: int = Field(5, ge=1, le=1000)
    chunk: int = Field(256, ge=1, le=10_000_000)  # stored embeddings scanned per step


class SpeechSettings(_Strict):
    enabled: bool = False
    voice: str = Field("en", pattern=r"^[A-Za-z0-9_+-]{1,32}$")


class PluginSettings(_Strict):
    arc_solver: ArcSolverSettings = Field(default_factory=ArcSolverSettings)
    vision: VisionSettings = Field(default_factory=VisionSettings)
    memory_retrieval: MemoryRetrievalSettings = Field(default_factory=MemoryRetrievalSettings)
    speech: SpeechSettings = Field(default_factory=SpeechSettings)


class StreamSettings(_Strict):
    idle_every: int = Field(0, ge=0, le=1_000_000)  # after this many tasks, insert idle cycles (0: never)
    idle_cycles: int = Field(0, ge=0, le=10_000)


class RunConfig(_Strict):
    model: str | None = None  # SAGE model folder; --model overrides
    device: str = Field("cpu", pattern=r"^(cpu|cuda|mps)(:\d{1,3})?$")
    threads: int | None = Field(None, ge=1, le=1024)  # torch CPU threads (null: torch's default)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    memory: str = Field("memory.sqlite", min_length=1)  # relative paths are inside --out
    # ARC Prize solutions of the challenges (relative to where you run). When set, each task's answers
    # are scored (pass@2) right after its cycle: the late ground truth of `Orchestrator.feedback`, which
    # moves each solver's trust at `orchestrator.trust.rate_truth` and records the outcome in memory.
    solutions: str | None = Field(None, min_length=1)
    orchestrator: OrchestratorSettings = Field(default_factory=OrchestratorSettings)
    plugins: PluginSettings = Field(default_factory=PluginSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)


def load_config(path: str | Path | None) -> RunConfig:
    """The validated config (defaults without a path); any problem is one ConfigError naming the field."""
    if path is None:
        return RunConfig()
    return load_yaml_config(RunConfig, path, what="orchestrator config")
