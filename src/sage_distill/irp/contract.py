"""The one IRP plugin contract.

A plugin refines a state step by step; `energy(state)` scores it (lower is better). `project` and
`halt` are optional: a plugin that lacks them gets the identity projection and the default halt rule
of `refine.default_halt`. The original runtime had three incompatible contracts; everything in
`sage_distill.irp` (refine, orchestrator, bench) speaks this one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class HaltDecision:
    halt: bool
    reason: str = ""


@dataclass
class StepRecord:
    """Telemetry of one refinement step."""

    step: int
    energy: float
    delta: float  # energy change from the previous step (negative = improvement)
    ms: float  # wall milliseconds of step + project + energy
    atp: float  # ATP charged for the step


@dataclass
class Answer:
    """What a solver plugin offers as the cycle's answer, with the signals salience needs."""

    value: Any
    uncertainty: float = 0.0  # in [0, 1]: e.g. mean cell entropy of the output (arousal)
    disagreement: float = 0.0  # in [0, 1]: e.g. spread of augmented predictions (conflict)


@runtime_checkable
class Plugin(Protocol):
    """Required part of the contract. Optional extras, detected with `hasattr`:

    - `project(state) -> state`: apply hard constraints after each step.
    - `halt(history: Sequence[StepRecord], state) -> HaltDecision`: replace the default halt rule; it sees
      the state the last step produced, so a plugin keeps no per-run state of its own.
    - `answer(state) -> Answer | None`: for plugins whose output can become the cycle's answer.
    - `learn(experiences) -> dict`: for plugins that DREAM consolidation may fine-tune.
    - `relevance(x, ctx) -> float`: salience of this input for this plugin (default 1).
    - `estimate_step_ms(state) -> float` and `estimate_init_ms(x, ctx) -> float`: the plugin's own
      estimate of its next call's cost; the orchestrator refuses a call its ATP cannot cover, using
      the larger of this estimate and the cost it measured.
    - `estimate_learn_ms(atp) -> float`: the same for a DREAM `learn` call.
    """

    name: str

    def init_state(self, x: Any, ctx: dict[str, Any]) -> Any: ...

    def step(self, state: Any) -> Any: ...

    def energy(self, state: Any) -> float: ...


@dataclass
class Budget:
    """Limits of one refinement: a step cap and, optionally, ATP (see `atp.py` for the unit).
    `min_steps` steps are taken even past the ATP limit (the overshoot is charged and recorded), so
    a plugin whose init alone exceeded its allocation still returns a refined answer."""

    max_steps: int = 16
    atp: float | None = None
    min_steps: int = 1


@dataclass
class RefineTrace:
    plugin: str
    initial_energy: float
    steps: list[StepRecord] = field(default_factory=list)
    halt_reason: str = ""
    best_step: int = 0  # 0 = the initial state

    @property
    def energies(self) -> list[float]:
        return [self.initial_energy] + [s.energy for s in self.steps]

    @property
    def atp_spent(self) -> float:
        return sum(s.atp for s in self.steps)

    @property
    def final_energy(self) -> float:
        return self.energies[self.best_step]

    def to_json(self) -> dict[str, Any]:
        return {"plugin": self.plugin, "steps": len(self.steps), "halt_reason": self.halt_reason,
                "best_step": self.best_step,
                "energies": [round(e, 6) if math.isfinite(e) else None for e in self.energies],
                "ms": [round(s.ms, 3) for s in self.steps], "atp": round(self.atp_spent, 3)}


def optional(plugin: Plugin, name: str) -> Any:
    """The plugin's optional method `name`, or None."""
    fn = getattr(plugin, name, None)
    return fn if callable(fn) else None


History = Sequence[StepRecord]
