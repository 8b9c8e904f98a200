"""A closed-loop Meta-World episode through the orchestrator, with the control policy as its only plugin.

`run_control_episode` runs one episode: one orchestrator cycle per chunk on the current observation, the
chunk's first `n_action_steps` actions executed, one trace record per cycle (the orchestrator's record plus
`control`: ATP, refinement steps, final energy, env steps, success). The plugin is `plugins/control.py`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..robot.policies.sage_control import ControlPolicy
from .config import OrchestratorSettings
from .orchestrator import Orchestrator
from .plugins.control import ControlInput, ControlPlugin
from .trace import TraceWriter


def run_control_episode(policy_folder: str | Path | ControlPolicy, task: str, seed: int,
                        settings: OrchestratorSettings | None = None, max_steps: int = 500,
                        trace_path: str | Path | None = None, flow_steps: int | None = None,
                        energy_threshold: float | None = None, protocol: str = "heldout",
                        device: str = "cpu") -> dict[str, Any]:
    """One Meta-World episode with the policy run as the orchestrator's only plugin: one cycle per chunk.
    `settings.base_budget` is the ATP (ms) budget of a WAKE cycle. Returns success, env steps, cycles,
    total ATP, mean refinement steps per chunk, and the per-cycle records (also appended to `trace_path`)."""
    from ..robot.envs import MetaWorldEnv, Variant
    from ..robot.evaluate import episode_noise, policy_batch
    from ..robot.train import load_policy

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


def control_command(policy_dir: Path, tasks: list[str], episodes: int, out: Path, protocol: str = "heldout",
                    device: str = "cpu") -> str:
    """`robot irp`: `episodes` episodes of each task through the orchestrator, the policy its only plugin;
    every cycle (one action chunk) a line of OUT/trace.jsonl with its ATP, and OUT/summary.json per episode.
    Every check before anything is written; --out must be new or empty (a short command: rerun afresh)."""
    from ..errors import ConfigError, check_new_output_dir
    from ..robot.train import load_policy
    from ..utils.device import check_device
    from ..utils.io import atomic_write_json

    if protocol not in ("heldout", "fixed"):
        raise ConfigError(f"must be heldout or fixed, got {protocol!r}", where="--protocol")
    if not 1 <= episodes <= 1000:
        raise ConfigError(f"must be 1..1000, got {episodes}", where="--episodes")
    check_device(device)
    out = check_new_output_dir(out)
    policy, trained = load_policy(policy_dir, device)
    unknown = [t for t in tasks if trained and t not in trained]
    if unknown:
        raise ConfigError(f"the policy was not trained on {', '.join(unknown)}", where="--tasks")
    rows = []
    for task in tasks:
        for seed in range(episodes):
            r = run_control_episode(policy, task, seed, trace_path=out / "trace.jsonl", protocol=protocol,
                                    device=device)
            rows.append({k: v for k, v in r.items() if k not in ("records", "time")}
                        | {"atp_per_chunk": r["atp"] / max(1, r["cycles"])})
    per_task = {t: float(np.mean([r["success"] for r in rows if r["task"] == t])) for t in tasks}
    atp = float(np.median([r["atp_per_chunk"] for r in rows]))
    atomic_write_json(out / "summary.json", {"policy": str(policy_dir), "protocol": protocol, "device": device,
                                             "per_task": per_task, "median_atp_per_chunk": atp,
                                             "episodes": rows}, indent=1)
    tasks_line = ", ".join(f"{t} {v:.0%}" for t, v in per_task.items())
    return (f"{len(rows)} episodes through the orchestrator: {tasks_line}; median {atp:.1f} ATP (ms) per chunk; "
            f"{out / 'trace.jsonl'} (one line per chunk), {out / 'summary.json'}")
