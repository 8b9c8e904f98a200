"""The control policy as an IRP plugin: one orchestrator cycle per action chunk, in closed loop on Meta-World."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")

from sage_distill.irp.config import OrchestratorSettings  # noqa: E402
from sage_distill.irp.contract import Budget  # noqa: E402
from sage_distill.irp.control_runner import run_control_episode  # noqa: E402
from sage_distill.irp.plugins.control import ControlInput, ControlPlugin  # noqa: E402
from sage_distill.irp.refine import refine  # noqa: E402
from sage_distill.irp.trace import read_trace  # noqa: E402
from sage_distill.robot.collect import collect  # noqa: E402
from sage_distill.robot.envs import MetaWorldEnv, Variant  # noqa: E402
from sage_distill.robot.evaluate import episode_noise, policy_batch  # noqa: E402
from sage_distill.robot.train import RobotTrainConfig, load_policy, train  # noqa: E402

TASK = "reach-v3"


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny state-based policy: 5 expert demos of reach-v3, 300 steps of a width-64 net."""
    torch.set_num_threads(1)  # one thread: far faster on a shared, loaded CPU
    root = tmp_path_factory.mktemp("irp_control")
    summary = collect(root / "data", [TASK], 5, image_size=None)
    assert summary["demos"] == 5
    train(RobotTrainConfig(data=root / "data", out=root / "pol", obs="state", steps=300, batch=64, width=64, depth=2,
                           lr=1e-3, warmup=20, save_every=10_000, log_every=10_000))
    return root / "pol"


def _query(policy, seed: int = 0) -> tuple[ControlInput, dict]:
    env = MetaWorldEnv(TASK)
    obs = env.reset(Variant(TASK, "heldout", seed))
    env.close()
    batch = policy_batch(policy, [obs], [obs["agent_pos"]], torch.device("cpu"))
    return ControlInput(batch, episode_noise(policy, Variant(TASK, "heldout", seed), 0)[None]), batch


def test_plugin_without_early_halt_equals_sample(policy_dir: Path) -> None:
    policy, _ = load_policy(policy_dir)
    x, batch = _query(policy)
    plugin = ControlPlugin(policy)
    K = plugin.K
    state, trace = refine(plugin, x, {}, Budget(max_steps=100))
    assert len(trace.steps) == K and trace.halt_reason == "flow done"  # never past t = 1
    want = policy.sample(batch, noise=x.noise)
    got = plugin.answer(state).value["chunk"]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert all(math.isfinite(e) and e > 0 for e in trace.energies)


def test_early_halt_finishes_the_flow_in_one_step(policy_dir: Path) -> None:
    policy, _ = load_policy(policy_dir)
    x, batch = _query(policy, 1)
    plugin = ControlPlugin(policy, energy_threshold=1e9, min_steps=2)  # settles at once, after 2 steps
    state, trace = refine(plugin, x, {}, Budget(max_steps=100))
    assert len(trace.steps) == 2 and trace.halt_reason == "settled"
    K = plugin.K
    with torch.no_grad():  # expected: 2 Euler steps of 1/K, then one of (K - 2)/K from t = 2/K
        cond = policy.encode(batch)
        z = policy.refine(policy.refine(x.noise.clone(), 0, K, cond), 1, K, cond)
        z = z + policy.velocity(z, torch.full((1,), 2 / K), cond) * (K - 2) / K
    torch.testing.assert_close(plugin.answer(state).value["chunk"], z.clamp(-1, 1), rtol=0, atol=1e-6)
    # Stopped by the step budget instead (not the plugin): `answer` takes the final jump.
    plugin = ControlPlugin(policy)
    state, trace = refine(plugin, x, {}, Budget(max_steps=3))
    assert len(trace.steps) == 3 and trace.halt_reason == "budget: steps"
    a = plugin.answer(state).value
    assert a["k"] == 3 and a["finished_early"] and a["chunk"].abs().max() <= 1


def test_closed_loop_through_the_orchestrator(policy_dir: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)  # one thread: far faster on a shared, loaded CPU
    settings = OrchestratorSettings(base_budget=500.0)
    trace_path = tmp_path / "trace.jsonl"
    K = load_policy(policy_dir)[0].cfg.flow_steps
    n_act = load_policy(policy_dir)[0].cfg.n_action_steps
    drops, results = [], []
    for seed in range(2):
        r = run_control_episode(policy_dir, TASK, seed, settings, max_steps=64, trace_path=trace_path)
        results.append(r)
        recs = r["records"]
        assert r["cycles"] == len(recs) >= 1
        assert r["steps"] <= 64 and r["steps"] <= n_act * r["cycles"]
        for i, rec in enumerate(recs, 1):
            c = rec["control"]
            assert rec["cycle"] == i and c["chunk"]
            assert c["atp"] > 0 and c["atp"] <= rec["limit"] + 1e-6
            assert rec["plugins"]["control"]["spent"] == pytest.approx(c["atp"], abs=1e-3)
            assert 1 <= c["refine_steps"] <= K
            assert len(c["energies"]) == c["refine_steps"]
            assert all(math.isfinite(e) for e in c["energies"]) and c["final_energy"] == c["energies"][-1]
            drops.append(c["energies"][0] - c["energies"][-1])
        assert [rec["control"]["env_steps"] for rec in recs] == sorted(rec["control"]["env_steps"] for rec in recs)
        assert recs[-1]["control"]["env_steps"] == r["steps"]
        assert 0 < r["atp"] <= r["budget"]
        assert r["atp"] == pytest.approx(sum(rec["control"]["atp"] for rec in recs))
        assert r["mean_refine_steps"] == pytest.approx(np.mean([rec["control"]["refine_steps"] for rec in recs]))
    # One trace line per cycle, both episodes appended to one file.
    lines = read_trace(trace_path)
    assert len(lines) == sum(r["cycles"] for r in results)
    assert [ln["control"]["atp"] for ln in lines] == [rec["control"]["atp"] for r in results for rec in r["records"]]
    # The update shrinks as the chunk settles: on average the last step is smaller than the first.
    assert np.mean(drops) > 0


def test_closed_loop_with_energy_halting_takes_fewer_steps(policy_dir: Path) -> None:
    policy, _ = load_policy(policy_dir)
    x, _ = _query(policy)
    plugin = ControlPlugin(policy)
    _, trace = refine(plugin, x, {}, Budget(max_steps=100))
    threshold = float(np.median([s.energy for s in trace.steps]))  # halts before the end on most chunks
    r = run_control_episode(policy, TASK, 0, OrchestratorSettings(base_budget=500.0), max_steps=32,
                            energy_threshold=threshold)
    steps = [rec["control"]["refine_steps"] for rec in r["records"]]
    assert all(1 <= s <= plugin.K for s in steps) and r["mean_refine_steps"] < plugin.K
    early = [rec for rec in r["records"] if rec["control"]["refine_steps"] < plugin.K]
    assert all(rec["control"]["halt_reason"] == "settled" and rec["control"]["finished_early"] for rec in early)


def test_robot_irp_command_writes_one_trace_line_per_chunk(cli, policy_dir: Path, tmp_path: Path) -> None:
    """`robot irp`: the trace has one record per orchestrator cycle, each an action chunk with its ATP, and
    the summary's per-episode ATP is the sum of its records'; bad input is refused before anything is
    written."""
    out = tmp_path / "irp"
    code, stdout, err = cli("robot", "irp", "--policy", policy_dir, "--tasks", TASK, "--episodes", "2", "--out", out)
    assert code == 0, err
    records, summary = read_trace(out / "trace.jsonl"), json.loads((out / "summary.json").read_text())
    episodes = summary["episodes"]
    assert [e["seed"] for e in episodes] == [0, 1] and len(records) == sum(e["cycles"] for e in episodes)
    assert all(r["control"]["chunk"] and r["control"]["atp"] > 0 for r in records)
    first = records[: episodes[0]["cycles"]]
    assert episodes[0]["atp"] == pytest.approx(sum(r["control"]["atp"] for r in first))
    assert first[-1]["control"]["env_steps"] == episodes[0]["steps"]
    assert "ATP (ms) per chunk" in stdout
    for args, words in [(["--tasks", "push-v3"], "not trained on push-v3"),
                        (["--protocol", "train"], "must be heldout or fixed"),
                        (["--episodes", "0"], "must be 1..1000"),
                        (["--out", out], "exists and is not empty")]:
        opts = {"--policy": policy_dir, "--tasks": TASK, "--out": tmp_path / "new",
                **dict(zip(args[::2], args[1::2], strict=True))}
        code, _, err = cli("robot", "irp", *[str(x) for kv in opts.items() for x in kv])
        assert code == 2 and words in err and err.count("\n") == 1, err
        assert not (tmp_path / "new").exists()
