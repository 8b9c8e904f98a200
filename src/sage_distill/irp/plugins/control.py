"""The SAGE control policy as an IRP plugin (the closed-loop Meta-World runner is `irp/control_runner.py`).

State: the action chunk being refined (flow matching from noise at t = 0 to a sample at t = 1), the
observation's condition (`ControlPolicy.encode`, computed once in `init_state`) and the step k taken so
far out of K = `flow_steps`. One IRP step = one Euler step (`ControlPolicy.refine`, time k/K -> (k+1)/K).
Energy = the size of the last update, mean |x_{k+1} - x_k| (the initial state, before any update, has
the noise's mean |x_0|). Halt (`halt`, replacing the orchestrator's default rule): after the K-th step
("flow done"), or, where `energy_threshold` is set, once the last update is at most that after
`min_steps` steps ("settled"). A run that stops at k < K (settled, or the ATP budget) is finished by ONE
Euler step of size (K - k)/K from time k/K, so the chunk always reaches t = 1 and never goes past it: on
"settled" inside that same `step` (so its time is charged as ATP), otherwise in `answer`. ATP follows the
runtime's unit (1 ATP = 1 ms measured by the orchestrator around init_state/step/energy), as for
`arc_solver`.

The refiner returns its lowest-energy state, not necessarily its last; all states of one run share a
`latest` holder, so `answer` always finishes the last chunk refined (as arc_solver's shared tallies).

"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ...robot.policies.sage_control import ControlPolicy
from ..contract import Answer, HaltDecision, History


@dataclass
class ControlInput:
    """One query: the model batch (`policy_batch`) and optionally the initial noise (chunk, action_dim)."""

    batch: dict[str, torch.Tensor]
    noise: torch.Tensor | None = None


@dataclass
class ControlState:
    x: torch.Tensor  # (B, chunk, action_dim) at time k / K
    k: int  # Euler steps taken (time k / K)
    cond: torch.Tensor
    energy: float
    energies: list[float]  # energy after each step of this run (shared by the run's states)
    latest: dict[str, ControlState] = field(default_factory=dict, repr=False)  # shared: the run's last state
    finished_early: bool = False  # the final (K - k)/K jump was taken inside `step`


class ControlPlugin:
    name = "control"
    role = "solver"

    def __init__(self, policy: ControlPolicy, flow_steps: int | None = None, energy_threshold: float | None = None,
                 min_steps: int = 1) -> None:
        self.policy = policy.eval()
        self.K = int(flow_steps or policy.cfg.flow_steps)
        if self.K < 1:
            raise ValueError("flow_steps must be at least 1")
        self.energy_threshold, self.min_steps = energy_threshold, max(1, min_steps)

    # ------------------------------------------------------------------ the contract

    def init_state(self, x: ControlInput, ctx: dict[str, Any]) -> ControlState:
        with torch.inference_mode():
            cond = self.policy.encode(x.batch)
            if x.noise is None:
                x0 = self.policy.start(cond.shape[0], cond.device)
            else:
                x0 = x.noise.to(cond.device).reshape(cond.shape[0], self.policy.cfg.chunk, self.policy.cfg.action_dim)
        s = ControlState(x0, 0, cond, float(x0.abs().mean()), [])
        s.latest["state"] = s
        return s

    def _jump(self, x: torch.Tensor, k: int, cond: torch.Tensor) -> torch.Tensor:
        """One Euler step from time k/K straight to t = 1 (size (K - k)/K)."""
        t = torch.full((x.shape[0],), k / self.K, device=x.device)
        return x + self.policy.velocity(x, t, cond) * (self.K - k) / self.K

    def step(self, s: ControlState) -> ControlState:
        if s.k >= self.K:  # never past t = 1 (the halt rule stops before this)
            return s
        with torch.inference_mode():
            x = self.policy.refine(s.x, s.k, self.K, s.cond)
            energy = float((x - s.x).abs().mean())
            out = ControlState(x, s.k + 1, s.cond, energy, s.energies, s.latest)
            s.energies.append(energy)
            if self._settled(out) and out.k < self.K:
                out = ControlState(self._jump(x, out.k, s.cond), out.k, s.cond, energy, s.energies, s.latest,
                                   finished_early=True)
        s.latest["state"] = out
        return out

    def energy(self, s: ControlState) -> float:
        return s.energy

    def _settled(self, s: ControlState) -> bool:
        return (self.energy_threshold is not None and s.k >= self.min_steps and s.k < self.K
                and s.energy <= self.energy_threshold)

    def halt_reason(self, s: ControlState) -> str | None:
        if s.finished_early:
            return "settled"
        if s.k >= self.K:
            return "flow done"
        return None

    def halt(self, history: History, s: ControlState) -> HaltDecision:
        reason = self.halt_reason(s)
        return HaltDecision(reason is not None, reason or "")

    def finish(self, s: ControlState) -> torch.Tensor:
        """The run's chunk at t = 1, clamped to the action range as `ControlPolicy.sample`."""
        last = s.latest.get("state", s)
        x = last.x
        if last.k < self.K and not last.finished_early:
            with torch.inference_mode():
                x = self._jump(x, last.k, last.cond)
        return x.clamp(-1.0, 1.0)

    def answer(self, s: ControlState) -> Answer:
        last = s.latest.get("state", s)
        return Answer({"chunk": self.finish(s), "k": last.k, "finished_early": last.finished_early
                       or last.k < self.K, "energies": list(last.energies)})
