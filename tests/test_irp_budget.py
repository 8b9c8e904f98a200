"""The orchestrator's budget promise: a cycle never spends more than its ATP limit plus one plugin
call's measured cost, over 100 synthetic tasks of known (and badly predictable) cost."""

from __future__ import annotations

import numpy as np
import pytest

from sage_distill.irp.atp import CycleLedger
from sage_distill.irp.config import OrchestratorSettings
from sage_distill.irp.orchestrator import Orchestrator
from sage_distill.irp.plugins.synthetic import ManualClock, ScriptedPerception, ScriptedPlugin

N_TASKS = 100
BUDGET = 20_000.0


def _tasks(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(N_TASKS):
        heavy = rng.random() < 0.2  # one task in five costs far more than the ones before it
        out.append({"id": f"t{i:03d}", "embedding": rng.normal(size=4).tolist(),
                    "cost": float(rng.uniform(2_000, 30_000) if heavy else rng.uniform(5, 800)),
                    "growth": float(rng.uniform(0, 0.5)), "init": float(rng.uniform(0, 4_000)),
                    "cost_b": float(rng.uniform(1, 300))})
    return out


def _calls(res) -> list[float]:
    """Every plugin call's measured cost in the cycle: init_state and each step."""
    calls = []
    for e in res.record["plugins"].values():
        calls.append(e["init_ms"])
        calls += e["ms"]
    return calls


def test_overspend_is_at_most_one_step_over_100_tasks() -> None:
    clock = ManualClock()
    a = ScriptedPlugin("a", lambda k, x: 100.0 / (k + 1), clock=clock, value=lambda x: "a",
                       step_cost=lambda x, k: x["cost"] * (1 + x["growth"] * k), init_cost=lambda x: x["init"])
    b = ScriptedPlugin("b", lambda k, x: 50.0 / (k + 1), clock=clock, value=lambda x: "b",
                       step_cost=lambda x, k: x["cost_b"] * (1 + k), init_cost=lambda x: x["cost_b"])
    settings = OrchestratorSettings(base_budget=BUDGET, reserve_capacity=1e12, perception_budget=100.0)
    orch = Orchestrator([ScriptedPerception(), a, b], settings, clock=clock, max_steps={"a": 200, "b": 200})
    overspends, refused, spent_total, limit_total = [], 0, 0.0, 0.0
    for x in _tasks():
        res = orch.cycle(x, key=x["id"])
        limit, calls = res.record["limit"], _calls(res)
        over = res.spent - limit
        # The promise: at most one call's measured cost beyond the limit (and the record says so).
        assert over <= max(calls, default=0.0) + 1e-6, (x["id"], res.spent, limit, calls)
        assert res.record["overspend"] == pytest.approx(max(over, 0.0), abs=1e-3)
        overspends.append(max(over, 0.0))
        refused += sum(e["halt_reason"].startswith("budget: atp") for e in res.record["plugins"].values())
        spent_total += res.spent
        limit_total += limit
    assert len(overspends) == N_TASKS
    assert refused > 0, "the budget never stopped a plugin: the test does not exercise the limit"
    assert any(o > 0 for o in overspends), "no dear step ever surprised the estimate: the bound is untested"
    # Without the check a dear task would run all 200 steps; with it, spending stays near the limit.
    assert spent_total <= limit_total + sum(overspends) + 1e-3
    assert sum(o > 0 for o in overspends) <= N_TASKS * 0.3


def test_a_known_dear_call_is_not_started() -> None:
    """Once a plugin's init_state was measured dearer than the budget, it is not started again."""
    clock = ManualClock()
    p = ScriptedPlugin("p", lambda k, x: 1.0 / (k + 1), clock=clock, value=lambda x: 1,
                       step_cost=lambda x, k: 10.0, init_cost=lambda x: 5_000.0)
    orch = Orchestrator([p], OrchestratorSettings(base_budget=1_000.0, reserve_capacity=1e9), clock=clock,
                        max_steps={"p": 50})
    first = orch.cycle("x", key="1")
    assert first.spent == pytest.approx(5_000.0)  # unknown cost: one call overspends, no more
    assert first.traces["p"].steps == []
    second = orch.cycle("x", key="2")
    assert second.spent == 0.0 and second.record["plugins"]["p"]["halt_reason"] == "budget: atp (not started)"
    assert orch.totals["p"]["refused"] >= 1


def test_ledger_refuses_what_it_cannot_cover() -> None:
    led = CycleLedger(100.0)
    assert led.reserve(60.0)
    assert not led.reserve(50.0)  # 60 reserved + 50 > 100
    led.settle(60.0, 90.0)  # the call cost more than estimated
    assert led.spent == 90.0 and led.reserved == 0.0
    assert led.reserve(10.0) and not led.reserve(1.0)
    led.settle(10.0, 15.0)
    assert led.spent == 105.0 and not led.reserve(0.0)  # over the limit: nothing starts
    assert led.refused == 3


def test_shipped_config_validates_and_names_a_model() -> None:
    from pathlib import Path

    from sage_distill.irp.config import load_config

    cfg = load_config(Path(__file__).parents[1] / "configs" / "orchestrator.yaml")
    assert cfg.model == "models/sage-arc-small" and cfg.orchestrator.base_budget > 0
