"""The plugin contract and `refine`: halt reasons, best-state return, telemetry, ATP limits."""

from __future__ import annotations

import pytest

from sage_distill.irp import Budget, HaltDecision, HaltRule, refine
from sage_distill.irp.plugins.synthetic import ManualClock, ScriptedPlugin


def plugin(energies: list[float], cost: float = 0.0, clock: ManualClock | None = None) -> ScriptedPlugin:
    return ScriptedPlugin("p", lambda k, x: energies[min(k, len(energies) - 1)], lambda x: cost, clock)


def test_converges_when_energy_stalls() -> None:
    p = plugin([8, 4, 2, 1, 1.0004, 1.0002, 1.0001])
    state, trace = refine(p, None, {}, Budget(max_steps=20), rule=HaltRule(eps=1e-3, converge_k=2))
    assert trace.halt_reason == "converged"
    assert len(trace.steps) == 5  # deltas -4,-2,-1,+0.0004,-0.0002: the last two are below eps
    assert trace.energies[:4] == [8, 4, 2, 1]
    assert [round(s.delta, 4) for s in trace.steps[:3]] == [-4, -2, -1]


def test_diverging_returns_best_state_not_last() -> None:
    p = plugin([5, 3, 1, 2, 4, 7, 11])
    state, trace = refine(p, None, {}, Budget(max_steps=20), rule=HaltRule(patience=3))
    assert trace.halt_reason == "diverging"
    assert len(trace.steps) == 5
    assert state.k == 2 and trace.best_step == 2 and trace.final_energy == 1


def test_oscillation_does_not_halt_before_budget() -> None:
    p = plugin([3, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2])
    state, trace = refine(p, None, {}, Budget(max_steps=8))
    assert trace.halt_reason == "budget: steps"
    assert len(trace.steps) == 8
    assert state.k == 7  # ties go to the later of the equal-energy states


def test_atp_budget_uses_measured_cost() -> None:
    clock = ManualClock()
    p = plugin([10, 9, 8, 7, 6, 5, 4, 3], cost=10.0, clock=clock)
    _, trace = refine(p, None, {}, Budget(max_steps=50, atp=35.0), clock=clock)
    assert trace.halt_reason == "budget: atp"
    assert len(trace.steps) == 3  # 30 spent, 5 left < the 10 a step costs
    assert [s.ms for s in trace.steps] == pytest.approx([10.0, 10.0, 10.0])
    assert trace.atp_spent == pytest.approx(30.0)


def test_min_steps_overrides_an_exhausted_account() -> None:
    clock = ManualClock()
    p = plugin([10, 9, 8], cost=50.0, clock=clock)
    _, trace = refine(p, None, {}, Budget(max_steps=5, atp=20.0), clock=clock)
    assert len(trace.steps) == 1 and trace.atp_spent == pytest.approx(50.0)


class Clamped(ScriptedPlugin):
    """Uses the optional project and halt hooks."""

    def project(self, s):
        s.k = min(s.k, 3)
        return s

    def halt(self, history, state):
        self.seen.append(state.k)  # the state the last step produced (after `project`)
        return HaltDecision(len(history) >= 4, "four steps")


def test_optional_project_and_halt_hooks() -> None:
    p = Clamped("c", lambda k, x: 10 - k)
    p.seen = []
    state, trace = refine(p, None, {}, Budget(max_steps=10))
    assert p.seen == [1, 2, 3, 3]
    assert trace.halt_reason == "four steps"
    assert state.k == 3
    assert trace.energies == [10, 9, 8, 7, 7]


def test_trace_json_has_curve_and_costs() -> None:
    clock = ManualClock()
    _, trace = refine(plugin([4, 2, 1, 1, 1], 2.5, clock), None, {}, Budget(max_steps=10), clock=clock)
    j = trace.to_json()
    assert j["energies"] == [4, 2, 1, 1, 1] and j["steps"] == 4 and j["atp"] == 10.0
    assert j["halt_reason"] == "converged"
