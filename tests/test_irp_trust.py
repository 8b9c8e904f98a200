"""Trust: bounded in [0, 1], rises for reliable plugins, falls for erratic ones."""

from __future__ import annotations

import numpy as np

from sage_distill.irp import Budget, refine
from sage_distill.irp.plugins.synthetic import ScriptedPlugin
from sage_distill.irp.trust import TrustBook, convergence_quality


def run(energies: list[float]):
    p = ScriptedPlugin("p", lambda k, x: energies[min(k, len(energies) - 1)])
    return refine(p, None, {}, Budget(max_steps=len(energies) - 1))[1]


def test_convergence_quality_values() -> None:
    assert convergence_quality(run([8, 4, 2, 1, 0.5])) == 0.5 * 1.0 + 0.5 * (0.5 + 0.5 * 7.5 / 8)
    assert convergence_quality(run([1, 1, 1])) == 0.75  # monotone (no rise), no improvement
    rising = run([1, 2, 3, 4, 5])  # halts 'diverging' at energy 4 after 3 rises
    assert rising.halt_reason == "diverging"
    assert convergence_quality(rising) == 0.5 * (0.5 * 0 + 0.5 * (0.5 - 0.5 * 3 / 4))  # halved


def test_reliable_plugin_climbs_above_0_9() -> None:
    book = TrustBook()
    path = []
    for _ in range(12):
        book.observe_run(run([8, 4, 2, 1, 0.5, 0.25]))
        book.observe_truth("p", True)
        path.append(book.get("p"))
    assert all(b > a for a, b in zip(path, path[1:], strict=False))
    assert path[-1] > 0.9 and path[-1] <= 1.0


def test_erratic_plugin_falls_below_0_3() -> None:
    rng = np.random.default_rng(0)
    book = TrustBook()
    for _ in range(12):
        book.observe_run(run(list(rng.uniform(0, 10, size=8))))
        book.observe_truth("p", bool(rng.random() < 0.1))
    assert book.get("p") < 0.3 and book.get("p") >= 0.0


def test_trust_can_rise_then_fall() -> None:
    book = TrustBook()
    for _ in range(10):
        book.observe_truth("p", True)
    high = book.get("p")
    for _ in range(10):
        book.observe_truth("p", False)
    assert high > 0.95 and book.get("p") < 0.05
    before, after = book.observe_truth("p", True)
    assert after > before
