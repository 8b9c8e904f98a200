"""Metabolic states: how much compute a cycle may spend and how many plugins may run.

Transitions are driven by measured signals, evaluated once per cycle in table order (first match
wins). Hysteresis: every pair of opposite transitions uses separate enter/exit thresholds, and a
state must be held `min_dwell` cycles before a transition, except two that must not wait: entering
CRISIS (the reserve is nearly gone) and waking from REST or DREAM when input arrives (an input must
not be ignored). REST spends no ATP, so it cannot fall into CRISIS. docs/IRP.md carries the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class State(StrEnum):
    WAKE = "WAKE"
    FOCUS = "FOCUS"
    REST = "REST"
    DREAM = "DREAM"
    CRISIS = "CRISIS"


@dataclass(frozen=True)
class Profile:
    budget_multiplier: float
    max_active: int
    recharge: float  # fraction of reserve capacity restored per cycle


PROFILES: dict[State, Profile] = {
    State.WAKE: Profile(1.0, 3, 0.10),
    State.FOCUS: Profile(1.5, 2, 0.05),  # more ATP, fewer plugins: concentrate on a salient input
    State.REST: Profile(0.25, 1, 0.30),  # little compute, fast recharge
    State.DREAM: Profile(0.5, 1, 0.10),  # only learners run, on memories (consolidation)
    State.CRISIS: Profile(0.3, 1, 0.20),  # reserve nearly empty: only the most trusted plugin
}


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")
    focus_enter: float = Field(0.7, ge=0, le=1)  # input salience
    focus_exit: float = Field(0.4, ge=0, le=1)
    rest_idle: int = Field(2, ge=1)  # idle cycles (no input) before WAKE -> REST
    dream_idle: int = Field(4, ge=1)  # idle cycles before REST -> DREAM
    dream_reserve: float = Field(0.5, ge=0, le=1)  # reserve fraction needed to dream
    dream_cycles: int = Field(3, ge=1)  # cycles of DREAM before DREAM -> REST
    crisis_enter: float = Field(0.15, ge=0, le=1)  # reserve fraction
    crisis_exit: float = Field(0.4, ge=0, le=1)
    min_dwell: int = Field(2, ge=0)


@dataclass(frozen=True)
class Signals:
    has_input: bool
    salience: float  # of the input, in [0, 1]; 0 without input
    idle_cycles: int  # consecutive cycles without input, including this one
    reserve: float  # ATP reserve as a fraction of capacity
    cycles_in_state: int  # cycles already spent in the current state
    has_memories: bool = True


# (from, to, condition as text for docs and traces): conditions are implemented in `next_state`.
TABLE: list[tuple[State, State, str]] = [
    (State.WAKE, State.CRISIS, "reserve < crisis_enter (immediate)"),
    (State.FOCUS, State.CRISIS, "reserve < crisis_enter (immediate)"),
    (State.DREAM, State.CRISIS, "reserve < crisis_enter (immediate)"),
    (State.CRISIS, State.WAKE, "reserve >= crisis_exit and input present"),
    (State.CRISIS, State.REST, "reserve >= crisis_exit and no input"),
    (State.WAKE, State.FOCUS, "input salience >= focus_enter"),
    (State.FOCUS, State.WAKE, "input salience < focus_exit, or no input"),
    (State.WAKE, State.REST, "idle_cycles >= rest_idle"),
    (State.REST, State.WAKE, "input present (immediate)"),
    (State.REST, State.DREAM, "idle_cycles >= dream_idle and reserve >= dream_reserve and memories exist"),
    (State.DREAM, State.WAKE, "input present (immediate)"),
    (State.DREAM, State.REST, "cycles_in_state >= dream_cycles"),
]


def next_state(state: State, s: Signals, t: Thresholds) -> tuple[State, str]:
    """The state for this cycle and the table row that fired ('' when it stays)."""
    if state in (State.WAKE, State.FOCUS, State.DREAM) and s.reserve < t.crisis_enter:
        return State.CRISIS, f"reserve {s.reserve:.2f} < {t.crisis_enter}"
    if state in (State.REST, State.DREAM) and s.has_input:
        return State.WAKE, "input arrived"
    if s.cycles_in_state < t.min_dwell:
        return state, ""
    if state is State.CRISIS:
        if s.reserve >= t.crisis_exit:
            return (State.WAKE, "recovered, input") if s.has_input else (State.REST, "recovered, idle")
    elif state is State.WAKE:
        if s.has_input and s.salience >= t.focus_enter:
            return State.FOCUS, f"salience {s.salience:.2f} >= {t.focus_enter}"
        if s.idle_cycles >= t.rest_idle:
            return State.REST, f"idle {s.idle_cycles} cycles"
    elif state is State.FOCUS:
        if not s.has_input or s.salience < t.focus_exit:
            return State.WAKE, f"salience {s.salience:.2f} < {t.focus_exit}"
    elif state is State.REST:
        if s.idle_cycles >= t.dream_idle and s.reserve >= t.dream_reserve and s.has_memories:
            return State.DREAM, f"idle {s.idle_cycles} cycles, reserve {s.reserve:.2f}"
    elif state is State.DREAM:
        if s.cycles_in_state >= t.dream_cycles:
            return State.REST, f"dreamt {s.cycles_in_state} cycles"
    return state, ""


class Metabolism:
    """Current state plus the ATP reserve it draws cycle budgets from."""

    def __init__(self, thresholds: Thresholds, capacity: float, state: State = State.WAKE) -> None:
        self.t, self.capacity = thresholds, capacity
        self.state, self.reserve, self.cycles_in_state = state, capacity, 0
        self.idle_cycles = 0
        self.time_in_state: dict[str, int] = {s.value: 0 for s in State}

    @property
    def profile(self) -> Profile:
        return PROFILES[self.state]

    @property
    def reserve_fraction(self) -> float:
        return self.reserve / self.capacity if self.capacity > 0 else 0.0

    def update(self, has_input: bool, salience: float, has_memories: bool) -> tuple[State, State, str]:
        """Advance one cycle; returns (before, after, why)."""
        self.idle_cycles = 0 if has_input else self.idle_cycles + 1
        sig = Signals(has_input, salience if has_input else 0.0, self.idle_cycles, self.reserve_fraction,
                      self.cycles_in_state, has_memories)
        before = self.state
        after, why = next_state(before, sig, self.t)
        if after is not before:
            self.state, self.cycles_in_state = after, 0
        self.cycles_in_state += 1
        self.time_in_state[self.state.value] += 1
        return before, after, why

    def cycle_budget(self, base: float) -> float:
        """ATP this cycle may spend: base x multiplier, never more than the reserve holds."""
        return max(min(base * self.profile.budget_multiplier, self.reserve), 0.0)

    def settle(self, spent: float) -> None:
        """Debit what the cycle spent, then recharge at the state's rate."""
        self.reserve = max(self.reserve - spent, 0.0)
        self.reserve = min(self.reserve + self.profile.recharge * self.capacity, self.capacity)
