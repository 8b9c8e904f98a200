"""ATP allocation with a floor, and unspent ATP flowing to plugins still running in the same cycle."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from sage_distill.irp.atp import allocate
from sage_distill.irp.plugins.synthetic import ManualClock, ScriptedPlugin
from sage_distill.irp.refine import HaltRule
from sage_distill.irp.rounds import run_plugins


def test_allocation_is_proportional_with_floor() -> None:
    a = allocate(1000.0, {"a": 0.9, "b": 0.1, "c": 0.0}, floor=0.1)
    assert sum(a.values()) == pytest.approx(1000.0)
    assert a["c"] == pytest.approx(100.0)  # the floor keeps a zero-trust plugin alive
    assert a["a"] == pytest.approx(100 + 700 * 0.9) and a["b"] == pytest.approx(100 + 700 * 0.1)
    assert allocate(10.0, {}, 0.1) == {}


def test_early_halter_hands_its_atp_to_the_runner() -> None:
    clock = ManualClock()
    quick = ScriptedPlugin("quick", lambda k, x: [5, 1, 1, 1][min(k, 3)], lambda x: 10.0, clock)  # converges at 3
    slow = ScriptedPlugin("slow", lambda k, x: 100 - k, lambda x: 10.0, clock)  # improves forever
    states, ledger = run_plugins([quick, slow], None, {}, 200.0, {"quick": 1.0, "slow": 1.0}, 0.0,
                                 {"quick": 50, "slow": 50}, HaltRule(), clock)
    q, s = ledger["quick"], ledger["slow"]
    assert q["trace"].halt_reason == "converged" and len(q["trace"].steps) == 3
    assert q["returned"] == pytest.approx(70.0)  # 100 allocated, 30 spent
    assert s["drawn"] == pytest.approx(70.0)
    assert len(s["trace"].steps) == 17  # 170 ATP at 10 each: more than its own 100 buys
    assert s["trace"].halt_reason == "budget: atp"
    assert q["spent"] + s["spent"] == pytest.approx(200.0)


def test_concurrent_rounds_give_the_same_steps() -> None:
    """Threads change when steps run, not what the rule decides: each plugin halts at the same step."""
    curves = {"a": [4, 2, 1, 1, 1, 1, 1, 1, 1], "b": [9, 3, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
              "c": [1, 2, 3, 4, 5, 6, 7]}
    plugins = [ScriptedPlugin(n, lambda k, x, c=c: c[min(k, len(c) - 1)]) for n, c in curves.items()]
    args = (None, {}, 1e6, dict.fromkeys(curves, 1.0), 0.1, dict.fromkeys(curves, 20), HaltRule())
    _, seq = run_plugins(plugins, *args)
    with ThreadPoolExecutor(3) as ex:
        _, par = run_plugins(plugins, *args, executor=ex)
    expect = {"a": ("converged", 4), "b": ("converged", 5), "c": ("diverging", 3)}
    for ledger in (seq, par):
        assert {n: (e["trace"].halt_reason, len(e["trace"].steps)) for n, e in ledger.items()} == expect
