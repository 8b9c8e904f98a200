"""Synthetic plugins with scripted energies and costs, and a manual clock.

They are instruments, not models: the orchestrator's own overhead is measured with them (their
compute is near zero), and tests use them to drive exact energy curves, ATP costs and metabolic
signals. Nothing here is used as a real plugin by `sage-distill run`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..contract import Answer


class ManualClock:
    """A clock (seconds) that only moves when told: makes ATP charges exact in tests."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def advance_ms(self, ms: float) -> None:
        self.t += ms / 1000.0


@dataclass
class ScriptState:
    x: Any
    k: int = 0


class ScriptedPlugin:
    """Energy after step k is `energies(k, x)` (k = 0 for the initial state); each step costs
    `cost(x)` ms on the manual clock (0 without one), or `step_cost(x, k)` for step k + 1 when given;
    init_state costs `init_cost(x)`. `answer` returns `value(x)`."""

    def __init__(self, name: str, energies: Callable[[int, Any], float], cost: Callable[[Any], float] | None = None,
                 clock: ManualClock | None = None, role: str = "solver",
                 value: Callable[[Any], Any] | None = None, learn_cost: float = 0.0,
                 step_cost: Callable[[Any, int], float] | None = None,
                 init_cost: Callable[[Any], float] | None = None) -> None:
        self.name, self.role = name, role
        self.energies, self.cost, self.clock, self.value = energies, cost, clock, value
        self.step_cost, self.init_cost = step_cost, init_cost
        self.learn_cost = learn_cost
        self.learned: list[int] = []

    def init_state(self, x: Any, ctx: dict[str, Any]) -> ScriptState:
        if self.clock is not None and self.init_cost is not None:
            self.clock.advance_ms(self.init_cost(x))
        return ScriptState(x)

    def step(self, s: ScriptState) -> ScriptState:
        if self.clock is not None:
            if self.step_cost is not None:
                self.clock.advance_ms(self.step_cost(s.x, s.k))
            elif self.cost is not None:
                self.clock.advance_ms(self.cost(s.x))
        return ScriptState(s.x, s.k + 1)

    def energy(self, s: ScriptState) -> float:
        return float(self.energies(s.k, s.x))

    def answer(self, s: ScriptState) -> Answer | None:
        return Answer(self.value(s.x)) if self.value is not None else None

    def learn(self, experiences: list, atp: float) -> dict[str, Any]:
        self.learned.extend(e.id for e in experiences)
        if self.clock is not None:
            self.clock.advance_ms(self.learn_cost)
        return {"experiences": len(experiences)}


class ScriptedPerception:
    """Puts a given embedding and neighbour signals into the context: `x` is a dict with
    'embedding', and optionally 'similarity' and 'surprise' of its nearest memories."""

    name = "perception"
    role = "perception"

    def init_state(self, x: Any, ctx: dict[str, Any]) -> ScriptState:
        return ScriptState(x)

    def step(self, s: ScriptState) -> ScriptState:
        return ScriptState(s.x, s.k + 1)

    def energy(self, s: ScriptState) -> float:
        return 1.0 - s.k

    def halt(self, history: Any, state: ScriptState) -> Any:
        from ..contract import HaltDecision

        return HaltDecision(True, "done")

    def context(self, s: ScriptState) -> dict[str, Any]:
        x = s.x
        out: dict[str, Any] = {"embedding": np.asarray(x.get("embedding", [1.0, 0.0]), np.float32)}
        if "similarity" in x:
            out["neighbour_similarity"] = [float(x["similarity"])]
            out["neighbour_surprise"] = float(x.get("surprise", 0.5))
        return out
