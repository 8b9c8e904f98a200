"""The SAGE control policy as an IRP plugin, and a closed-loop Meta-World runner through the orchestrator.

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

`run_control_episode` runs one Meta-World episode in closed loop: one orchestrator cycle per chunk on the
current observation, the chunk's first `n_action_steps` actions executed, one trace record per cycle
(the orchestrator's record plus `control`: ATP, refinement steps, final energy, env steps, success).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...robot.policies.sage_control import ControlPolicy
from ..config import OrchestratorSettings
from ..contract import Answer, HaltDecision, History
from ..orchestrator import Orchestrator
from ..trace import TraceWriter


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
        self._last: ControlState | None = None

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
        self._last = s
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
        self._last = out
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

    def halt(self, history: History) -> HaltDecision:
        reason = self.halt_reason(self._last) if self._last is not None else None
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


# ---------------------------------------------------------------------- closed loop


def run_control_episode(policy_folder: str | Path | ControlPolicy, task: str, seed: int,
                        settings: OrchestratorSettings | None = None, max_steps: int = 500,
                        trace_path: str | Path | None = None, flow_steps: int | None = None,
                        energy_threshold: float | None = None, protocol: str = "heldout",
                        device: str = "cpu") -> dict[str, Any]:
    """One Meta-World episode with the policy run as the orchestrator's only plugin: one cycle per chunk.
    `settings.base_budget` is the ATP (ms) budget of a WAKE cycle. Returns success, env steps, cycles,
    total ATP, mean refinement steps per chunk, and the per-cycle records (also appended to `trace_path`)."""
    from ...robot.envs import MetaWorldEnv, Variant
    from ...robot.evaluate import episode_noise, policy_batch
    from ...robot.train import load_policy

    if isinstance(policy_folder, ControlPolicy):
        policy = policy_folder.to(device).eval()
    else:
        policy, _ = load_policy(policy_folder, device)
    plugin = ControlPlugin(policy, flow_steps, energy_threshold)
    orch = Orchestrator([plugin], settings or OrchestratorSettings(), max_steps={plugin.name: plugin.K})
    writer = TraceWriter(trace_path) if trace_path is not None else None
    env = MetaWorldEnv(task, image_size=policy.cfg.image_size if policy.cfg.obs == "pixels" else None)
    variant = Variant(task, protocol, seed)
    dev = torch.device(device)
    records: list[dict[str, Any]] = []
    try:
        obs = env.reset(variant)
        prev = obs["agent_pos"]
        steps, success, done = 0, False, False
        while not done and steps < max_steps:
            q = orch.n  # query number: the noise is a pure function of (episode, query), as in evaluate
            x = ControlInput(policy_batch(policy, [obs], [prev], dev), episode_noise(policy, variant, q)[None])
            res = orch.cycle(x, key=f"{task}/{protocol}/{seed}/{q}")
            tr = res.traces.get(plugin.name)
            if res.answer is None:  # refused for want of ATP (or not active): no chunk this cycle
                chunk = None
            else:
                chunk = res.answer["chunk"][0].float().cpu().numpy()
                for a in chunk[: policy.cfg.n_action_steps]:
                    o, ok, out_of_time = env.step(a)
                    prev, obs = obs["agent_pos"], o
                    steps += 1
                    if ok or out_of_time or steps >= max_steps:
                        success, done = ok, True
                        break
            ledger = res.record.get("plugins", {}).get(plugin.name, {})
            energies = res.answer["energies"] if res.answer is not None else []
            control = {"atp": round(float(ledger.get("spent", 0.0)), 4),
                       "refine_steps": len(tr.steps) if tr is not None else 0,
                       "halt_reason": tr.halt_reason if tr is not None else "not started",
                       "finished_early": bool(res.answer["finished_early"]) if res.answer is not None else False,
                       "energies": [round(e, 6) for e in energies],
                       "final_energy": round(energies[-1], 6) if energies else None,
                       "env_steps": steps, "success": bool(success), "chunk": chunk is not None}
            rec = {**res.record, "control": control}
            records.append(rec)
            if writer is not None:
                writer.write(rec)
            if chunk is None and orch.n > max_steps:  # guard: never loop forever without acting
                break
    finally:
        env.close()
        orch.close()
        if writer is not None:
            writer.close()
    n = len(records)
    return {"task": task, "seed": seed, "success": bool(success), "steps": steps, "cycles": n,
            "atp": float(sum(r["control"]["atp"] for r in records)),
            "budget": float(sum(r.get("limit", 0.0) for r in records)),
            "mean_refine_steps": float(np.mean([r["control"]["refine_steps"] for r in records])) if n else 0.0,
            "records": records, "wall_s": None if not records else round(
                sum(r.get("wall_ms", 0.0) for r in records) / 1000.0, 4), "time": time.time()}
