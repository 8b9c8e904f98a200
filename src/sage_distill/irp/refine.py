"""`refine`: loop step, project, energy until halted, with telemetry.

Halt rule by default (a plugin's own `halt(history, state)` replaces the first two; the budget always holds):
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

from .atp import Account, CycleLedger, Pool
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
    move ATP between them between steps. `refine` below is the plain loop.

    Before every call (init_state included) the refiner checks that what is left can cover the
    call's estimated cost: the last step's measured cost, else `step_estimate` (what the orchestrator
    measured for this plugin before), raised to the plugin's own `estimate_step_ms(state)` where it
    has one; for init_state, `init_estimate` or the plugin's `estimate_init_ms(x, ctx)`. A call that
    cannot be covered is not started; only the first `budget.min_steps` steps are forced."""

    def __init__(self, plugin: Plugin, x: Any, ctx: dict[str, Any], budget: Budget, *,
                 account: Account | None = None, pool: Pool | None = None,
                 pool_share: Callable[[], float] | None = None,
                 rule: HaltRule = default_halt, clock: Clock = time.perf_counter,
                 ledger: CycleLedger | None = None, init_estimate: float = 0.0, step_estimate: float = 0.0) -> None:
        self.plugin, self.budget, self.rule, self.clock = plugin, budget, rule, clock
        self.account = account if account is not None else (Account(budget.atp) if budget.atp is not None else None)
        self.pool, self.pool_share, self.ledger = pool, pool_share, ledger
        self.step_estimate = step_estimate
        self._project = optional(plugin, "project")
        self._halt = optional(plugin, "halt")
        self._estimate_step = optional(plugin, "estimate_step_ms")
        self.done = False
        self._last_ms = 0.0
        self.init_ms = 0.0
        est_init = optional(plugin, "estimate_init_ms")
        if est_init is not None:
            init_estimate = max(init_estimate, float(est_init(x, ctx) or 0.0))
        self.started = budget.min_steps > 0 or self._can_start(init_estimate)
        if not self.started:
            self.state = self.best_state = None
            self.best_energy = float("inf")
            self.trace = RefineTrace(plugin.name, float("nan"), halt_reason="budget: atp (not started)")
            self.done = True
            return
        t0 = clock()
        state = plugin.init_state(x, ctx)
        if self._project:
            state = self._project(state)
        e0 = float(plugin.energy(state))
        self.init_ms = (clock() - t0) * 1000.0
        self._settle(init_estimate if budget.min_steps == 0 else None, self.init_ms)
        self.state, self.best_state, self.best_energy = state, state, e0
        self.trace = RefineTrace(plugin.name, e0)

    def _next_estimate(self) -> float:
        est = self._last_ms if self.trace.steps else self.step_estimate
        if self._estimate_step is not None:
            est = max(est, float(self._estimate_step(self.state) or 0.0))
        return max(est, 1e-9)

    def _can_start(self, need: float) -> bool:
        """Whether a call of estimated cost `need` fits the account (topped up from the pool) and the
        cycle's ledger; on True the ledger holds `need` reserved until `_settle`."""
        slack = 1e-6  # a nanosecond of ATP: clock arithmetic must not cost a step
        if self.account is not None:
            if self.account.remaining + slack < need and self.pool is not None:
                self.account.drawn += self.pool.draw(self.pool_share() if self.pool_share else 1.0)
            if self.account.remaining <= 0 or self.account.remaining + slack < need:
                return False
        return self.ledger is None or self.ledger.reserve(need)

    def _settle(self, reserved: float | None, ms: float) -> None:
        """Charge a finished call; `reserved` is what `_can_start` reserved (None: a forced call)."""
        if self.account is not None:
            self.account.charge(ms)
        if self.ledger is not None:
            self.ledger.settle(reserved or 0.0, ms)

    def _affordable(self) -> bool:
        self._reserved = self._next_estimate()
        return self._can_start(self._reserved)

    def advance(self) -> bool:
        """Run one step unless halted; returns True while the refinement is still running."""
        if self.done:
            return False
        if len(self.trace.steps) >= self.budget.max_steps:
            return self._stop("budget: steps")
        self._reserved: float | None = None  # forced steps reserve nothing
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
        self._settle(self._reserved, ms)
        self._last_ms, self.state = ms, state
        if energy <= self.best_energy:
            self.best_state, self.best_energy, self.trace.best_step = state, energy, len(self.trace.steps)
        decision = self._halt(self.trace.steps, state) if self._halt else self.rule(self.trace.steps)
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
