"""Metabolic states: the table's rules, hysteresis, and a simulation that drives the orchestrator
through every state and every transition of the table."""

from __future__ import annotations

from pathlib import Path

from sage_distill.irp.config import OrchestratorSettings
from sage_distill.irp.memory import Memory
from sage_distill.irp.metabolic import TABLE, Signals, State, Thresholds, next_state
from sage_distill.irp.orchestrator import Orchestrator
from sage_distill.irp.plugins.synthetic import ManualClock, ScriptedPerception, ScriptedPlugin
from sage_distill.irp.trace import TraceWriter, read_trace

T = Thresholds()


def sig(**kw) -> Signals:
    base = dict(has_input=True, salience=0.0, idle_cycles=0, reserve=1.0, cycles_in_state=5)
    return Signals(**{**base, **kw})


def test_hysteresis_focus_band_does_not_flap() -> None:
    # Between focus_exit (0.4) and focus_enter (0.7) neither WAKE nor FOCUS changes.
    assert next_state(State.WAKE, sig(salience=0.6), T)[0] is State.WAKE
    assert next_state(State.FOCUS, sig(salience=0.6), T)[0] is State.FOCUS
    assert next_state(State.WAKE, sig(salience=0.7), T)[0] is State.FOCUS
    assert next_state(State.FOCUS, sig(salience=0.39), T)[0] is State.WAKE
    # min_dwell: a fresh state holds even past a threshold, except for entering CRISIS and waking.
    assert next_state(State.WAKE, sig(salience=0.9, cycles_in_state=1), T)[0] is State.WAKE
    assert next_state(State.WAKE, sig(reserve=0.1, cycles_in_state=0), T)[0] is State.CRISIS
    assert next_state(State.DREAM, sig(cycles_in_state=0), T)[0] is State.WAKE
    assert next_state(State.REST, sig(has_input=False, idle_cycles=9, cycles_in_state=1), T)[0] is State.REST
    # CRISIS is left only above crisis_exit, not just above crisis_enter.
    assert next_state(State.CRISIS, sig(reserve=0.3), T)[0] is State.CRISIS


def test_dream_needs_memories_and_reserve() -> None:
    idle = dict(has_input=False, idle_cycles=9)
    assert next_state(State.REST, sig(**idle), T)[0] is State.DREAM
    assert next_state(State.REST, sig(**idle, has_memories=False), T)[0] is State.REST
    assert next_state(State.REST, sig(**idle, reserve=0.45), T)[0] is State.REST


CALM = {"similarity": 1.0, "surprise": 0.0, "cost": 10.0}  # input salience 0
HOT = {"similarity": -1.0, "surprise": 1.0, "cost": 10.0}  # input salience 1
HEAVY = {"similarity": 1.0, "surprise": 0.0, "cost": 5000.0}  # drains the reserve
HOT_HEAVY = {**HOT, "cost": 5000.0}

# (input or None, count): the script that visits every transition. A heavy input drains the reserve
# only when it follows a cheap one: the orchestrator starts no step its measured cost says it cannot
# afford, so only a step dearer than the last one measured can overspend (by that one step).
SCRIPT = [
    (CALM, 3), (HOT, 3), (CALM, 3),  # WAKE -> FOCUS -> WAKE
    (None, 3), (CALM, 3),  # WAKE -> REST -> WAKE
    (None, 6), (CALM, 1),  # WAKE -> REST -> DREAM -> WAKE
    (None, 9), (CALM, 3),  # ... DREAM -> REST -> DREAM -> WAKE
    (HEAVY, 2), (None, 4),  # WAKE -> CRISIS -> REST (recovered while idle)
    (CALM, 5), (HEAVY, 1), (CALM, 6),  # REST -> WAKE (cheap runs relearn the cost), spend -> CRISIS -> WAKE
    (HOT, 3), (HOT_HEAVY, 2),  # WAKE -> FOCUS -> CRISIS
    ("DREAM_HEAVY", 1), (None, 3),  # ... -> REST -> DREAM, an expensive dream -> CRISIS
]


def test_simulation_visits_every_state_and_transition(tmp_path: Path) -> None:
    clock = ManualClock()
    solver = ScriptedPlugin("solver", lambda k, x: 10.0 / (k + 1), lambda x: x["cost"], clock, value=lambda x: 1)
    settings = OrchestratorSettings(base_budget=200.0, reserve_capacity=1000.0, perception_budget=10.0)
    memory = Memory(tmp_path / "m.sqlite")
    trace = TraceWriter(tmp_path / "t.jsonl")
    orch = Orchestrator([ScriptedPerception(), solver], settings, memory, trace, clock=clock,
                        max_steps={"solver": 3})
    for item, count in SCRIPT:
        for _ in range(count):
            if item == "DREAM_HEAVY":  # make the next dream cost more than the reserve holds
                solver.learn_cost = 5000.0
                while orch.metabolism.state is not State.DREAM:
                    orch.cycle(None)
                orch.cycle(None)
            else:
                orch.cycle(None if item is None else {**item, "embedding": [1.0, 0.0]})
    trace.close()
    records = [r for r in read_trace(tmp_path / "t.jsonl") if "cycle" in r]
    seen = {(r["state_before"], r["state"]) for r in records if r["state_before"] != r["state"]}
    table = {(a.value, b.value) for a, b, _ in TABLE}
    assert table - seen == set(), f"transitions never fired: {sorted(table - seen)}"
    assert seen <= table, f"transitions outside the table: {sorted(seen - table)}"
    assert all(orch.metabolism.time_in_state[s.value] > 0 for s in State)
    assert solver.learned, "DREAM replayed no memories"
    assert all(r["transition"] for r in records if r["state_before"] != r["state"])
    memory.close()
