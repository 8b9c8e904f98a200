"""`refine`: loop step, project, energy until halted, with telemetry.

Halt rule by default (a plugin's own `halt(history)` replaces the first two; the budget always holds):
- converged: |energy change| < eps for `converge_k` consecutive steps (a stall);
- diverging: energy rose by more than eps for `patience` consecutive steps;
- budget: the step cap or the ATP account is spent.
Oscillating energy is none of these and keeps refining until the budget ends (the original runtime
stopped on any rise, which cut refinement short). Whatever the reason, the state returned is the
lowest-energy state seen (ties go to the later one), so a diverging run never returns its worst state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .atp import Account, Pool
from .contract import Budget, HaltDecision, History, Plugin, RefineTrace, StepRecord, optional

Clock = Callable[[], float]  # seconds


@dataclass(frozen=True)
class HaltRule:
    eps: float = 1e-3
    converge_k: int = 2
    patience: int = 3

    def __call__(self, history: History) -> HaltDecision:
        if len(history) >= self.patience and all(s.delta > self.eps for s in history[-self.patience:]):
            return HaltDecision(True, "diverging")
        if len(history) >= self.converge_k and all(abs(s.delta) < self.eps for s in history[-self.converge_k:]):
            return HaltDecision(True, "converged")
        return HaltDecision(False)


default_halt = HaltRule()


class Refiner:
    """One refinement, advanced a step at a time, so the orchestrator can interleave plugins and
    move ATP between them between steps. `refine` below is the plain loop."""

    def __init__(self, plugin: Plugin, x: Any, ctx: dict[str, Any], budget: Budget, *,
                 account: Account | None = None, pool: Pool | None = None,
                 pool_share: Callable[[], float] | None = None,
                 rule: HaltRule = default_halt, clock: Clock = time.perf_counter) -> None:
        self.plugin, self.budget, self.rule, self.clock = plugin, budget, rule, clock
        self.account = account if account is not None else (Account(budget.atp) if budget.atp is not None else None)
        self.pool, self.pool_share = pool, pool_share
        self._project = optional(plugin, "project")
        self._halt = optional(plugin, "halt")
        t0 = clock()
        state = plugin.init_state(x, ctx)
        if self._project:
            state = self._project(state)
        e0 = float(plugin.energy(state))
        self.init_ms = (clock() - t0) * 1000.0
        if self.account is not None:
            self.account.charge(self.init_ms)
        self.state, self.best_state, self.best_energy = state, state, e0
        self.trace = RefineTrace(plugin.name, e0)
        self.done = False
        self._last_ms = 0.0

    def _affordable(self) -> bool:
        if self.account is None:
            return True
        need = max(self._last_ms, 1e-9)  # the next step should cost about what the last one did
        slack = 1e-6  # a nanosecond of ATP: clock arithmetic must not cost a step
        if self.account.remaining + slack < need and self.pool is not None:
            self.account.drawn += self.pool.draw(self.pool_share() if self.pool_share else 1.0)
        return self.account.remaining + slack >= need or (not self.trace.steps and self.account.remaining > 0)

    def advance(self) -> bool:
        """Run one step unless halted; returns True while the refinement is still running."""
        if self.done:
            return False
        if len(self.trace.steps) >= self.budget.max_steps:
            return self._stop("budget: steps")
        if len(self.trace.steps) >= self.budget.min_steps and not self._affordable():
            return self._stop("budget: atp")
        t0 = self.clock()
        state = self.plugin.step(self.state)
        if self._project:
            state = self._project(state)
        energy = float(self.plugin.energy(state))
        ms = (self.clock() - t0) * 1000.0
        prev = self.trace.energies[-1]
        self.trace.steps.append(StepRecord(len(self.trace.steps) + 1, energy, energy - prev, ms, ms))
        if self.account is not None:
            self.account.charge(ms)
        self._last_ms, self.state = ms, state
        if energy <= self.best_energy:
            self.best_state, self.best_energy, self.trace.best_step = state, energy, len(self.trace.steps)
        decision = self._halt(self.trace.steps) if self._halt else self.rule(self.trace.steps)
        if decision.halt:
            return self._stop(decision.reason or "plugin halt")
        if len(self.trace.steps) >= self.budget.max_steps:
            return self._stop("budget: steps")
        return True

    def _stop(self, reason: str) -> bool:
        self.done = True
        self.trace.halt_reason = reason
        return False

    def result(self) -> tuple[Any, RefineTrace]:
        return self.best_state, self.trace


def refine(plugin: Plugin, x: Any, ctx: dict[str, Any], budget: Budget, *, rule: HaltRule = default_halt,
           clock: Clock = time.perf_counter) -> tuple[Any, RefineTrace]:
    """Refine `x` with `plugin` until halted; returns the best state and the trace."""
    r = Refiner(plugin, x, ctx, budget, rule=rule, clock=clock)
    while r.advance():
        pass
    return r.result()
