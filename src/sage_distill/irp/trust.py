"""Trust per plugin, in [0, 1], learned from measured outcomes.

Rule (an exponential moving average toward each observation, so trust can reach 0 and 1 and both
rise and fall; the original rule could never exceed 2/3):

    trust <- trust + rate * (observation - trust)

Two kinds of observation:
- after every run, convergence quality q in [0, 1] (rate `rate_convergence`, default 0.2):
      q = 0.5 * monotonicity + 0.5 * improvement,  halved again when the run diverged
  monotonicity = share of steps whose energy did not rise by more than eps;
  improvement = clip(0.5 + 0.5 * (E_initial - E_final) / max(|E_initial|, |E_final|, eps), 0, 1)
  (1 when energy fell all the way to zero or changed sign downward, 0.5 when unchanged, 0 when it rose).
- when ground truth arrives later (a solution, a robot success), correctness c in {0, 1}
  (rate `rate_truth`, default 0.35: truth is stronger evidence than self-reported energy).

From 0.5, eight perfect runs lift trust above 0.9 and five wrong answers drop it below 0.1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .contract import RefineTrace


def convergence_quality(trace: RefineTrace, eps: float = 1e-6) -> float:
    if not trace.steps:
        return 0.5  # no evidence either way
    mono = sum(1 for s in trace.steps if s.delta <= eps) / len(trace.steps)
    e0, ef = trace.initial_energy, trace.energies[-1]
    scale = max(abs(e0), abs(ef), eps)
    improvement = min(max(0.5 + 0.5 * (e0 - ef) / scale, 0.0), 1.0)
    q = 0.5 * mono + 0.5 * improvement
    return q * 0.5 if trace.halt_reason == "diverging" else q


@dataclass
class TrustBook:
    initial: float = 0.5
    rate_convergence: float = 0.2
    rate_truth: float = 0.35
    values: dict[str, float] = field(default_factory=dict)

    def get(self, name: str) -> float:
        return self.values.get(name, self.initial)

    def _move(self, name: str, observation: float, rate: float) -> tuple[float, float]:
        before = self.get(name)
        after = min(max(before + rate * (observation - before), 0.0), 1.0)
        self.values[name] = after
        return before, after

    def observe_run(self, trace: RefineTrace) -> tuple[float, float]:
        """Update from a finished run; returns (trust before, trust after)."""
        return self._move(trace.plugin, convergence_quality(trace), self.rate_convergence)

    def observe_truth(self, name: str, correct: bool | float) -> tuple[float, float]:
        return self._move(name, float(correct), self.rate_truth)
