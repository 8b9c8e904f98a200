"""The control policy as one ONNX graph per action chunk (`robot export`), on tiny policies built here: the
graph's layout and manifest, the same actions as torch within 1e-4 (fp32) on random and on recorded
Meta-World observations, int8 within a looser bound, `robot eval --runtime onnx` with the same episodes and
actions as torch, `robot latency --runtime onnx`, the benchmark script, and bad input refused with one
`error:` line (exit 2) before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_script, tiny_policy

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("metaworld")

from sage_distill.robot.envs import EnvPool, Variant  # noqa: E402
from sage_distill.robot.evaluate import episode_noise, policy_batch, run_episodes  # noqa: E402
from sage_distill.robot.onnx_policy import OnnxPolicy, export_policy  # noqa: E402
from sage_distill.robot.policies.sage_control import ControlConfig, ControlPolicy  # noqa: E402
from sage_distill.robot.train import load_policy, policy_hash  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

FP32_BOUND = 1e-4  # the parity bound on |action difference| (measured ~1e-6)
INT8_BOUND = 0.15  # int8 is reported, not identical: a bound on the MEAN |difference| (measured 0.045-0.075)
CONFIGS = {"state": {"obs": "state"}, "pixels": {"obs": "pixels", "image_size": 32, "channels": (8, 8, 16, 16)}}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx_policy")
    for name, kw in CONFIGS.items():
        tiny_policy(root / name, **kw)
        for precision in ("fp32", "int8"):
            export_policy(root / name, root / f"{name}-{precision}", precision)
    return {p.name: p for p in root.iterdir()}


def random_batch(cfg: ControlConfig, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b = {"proprio": torch.randn(n, 8, generator=g), "task_index": torch.randint(0, 50, (n,), generator=g)}
    if cfg.obs == "pixels":
        b["pixels"] = torch.randint(0, 256, (n, cfg.image_size, cfg.image_size, 3), dtype=torch.uint8, generator=g)
    else:
        b["state"] = torch.randn(n, cfg.state_dim, generator=g) * 2
    return b


def differences(policy: ControlPolicy, runner: OnnxPolicy, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """|torch - ONNX Runtime| of every action, from the same noise."""
    noise = torch.randn(batch["proprio"].shape[0], 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return (policy.sample(batch, noise=noise) - runner.sample(batch, noise=noise)).abs()


def max_diff(policy: ControlPolicy, runner: OnnxPolicy, batch: dict[str, torch.Tensor]) -> float:
    return differences(policy, runner, batch).max().item()


def test_the_graph_and_its_manifest(world) -> None:
    for name in CONFIGS:
        graph = onnx.load(str(world[f"{name}-fp32"] / "policy.onnx"))
        assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) <= 20
        assert [i.name for i in graph.graph.input] == [name, "proprio", "task_index", "noise"]
        assert [o.name for o in graph.graph.output] == ["actions"]
        assert all(i.type.tensor_type.shape.dim[0].dim_param == "batch" for i in graph.graph.input)
        meta = json.loads((world[f"{name}-fp32"] / "policy-onnx.json").read_text())
        assert meta["policy_sha256"] == policy_hash(world[name]) and meta["flow_steps"] == 3
        assert meta["tasks"] == ["reach-v3", "push-v3"] and len(meta["task_names"]) == 50
        assert "proprio" in meta["normalisers"] and (name in meta["normalisers"])
        assert meta["graphs"]["chunk"]["outputs"][0]["shape"] == ["batch", 4, 4]
    pixels = json.loads((world["pixels-fp32"] / "policy-onnx.json").read_text())["graphs"]["chunk"]["inputs"][0]
    assert pixels == {"name": "pixels", "type": "tensor(uint8)", "shape": ["batch", 32, 32, 3]}


@pytest.mark.parametrize("name,n", [("state", 400), ("pixels", 200)])
def test_fp32_actions_match_torch_on_random_observations(world, name: str, n: int) -> None:
    policy, _ = load_policy(world[name])
    runner = OnnxPolicy(world[f"{name}-fp32"])
    batch = random_batch(policy.cfg, n)
    worst = max_diff(policy, runner, batch)
    one = max_diff(policy, runner, {k: v[:1] for k, v in batch.items()})  # batch 1: the dynamic axis
    print(f"{name}: max |torch - onnx fp32| over {n} observations = {worst:.2e}")
    assert worst < FP32_BOUND and one < FP32_BOUND
    int8 = differences(policy, OnnxPolicy(world[f"{name}-int8"]), batch)
    print(f"{name}: |torch - onnx int8| max {int8.max():.3f}, mean {int8.mean():.4f}")
    assert worst < int8.max() and int8.mean() < INT8_BOUND  # quantised: not identical, but close on average


def test_fp32_actions_match_torch_on_recorded_observations(world) -> None:
    """300 states the Meta-World expert visits (reach-v3 and push-v3, held-out variants), with their proprio:
    the benchmark script's recorder."""
    policy, _ = load_policy(world["state"])
    runner = OnnxPolicy(world["state-fp32"])
    pairs = load_script("bench_policy_onnx").recorded(policy, ["reach-v3", "push-v3"], 300)
    batch = policy_batch(policy, [o for o, _ in pairs], [p for _, p in pairs], torch.device("cpu"))
    worst = max_diff(policy, runner, batch)
    print(f"recorded: max |torch - onnx fp32| over {len(pairs)} observations = {worst:.2e}")
    assert len(pairs) == 300 and worst < FP32_BOUND


def test_episodes_through_onnx_runtime_act_as_torch(world, tmp_path, cli) -> None:
    """Two short held-out episodes (reach-v3, the state policy): every executed action within 1e-4 of torch's,
    the same successes and lengths; then `robot eval --runtime onnx` against `robot eval` on one episode."""
    def actions(policy) -> tuple[list[np.ndarray], dict]:
        seen, ends = [], {}

        def on_step(ids, obs, acts):
            seen.append(acts.copy())
            return acts

        variants = [Variant("reach-v3", "heldout", s) for s in range(2)]
        with EnvPool(image_size=None) as pool:
            run_episodes(policy, variants, pool, torch.device("cpu"), on_step=on_step,
                         on_done=lambda i, ok, n, frames: ends.update({i: (ok, n)}))
        return seen, ends

    (a, ends_a), (b, ends_b) = actions(load_policy(world["state"])[0]), actions(OnnxPolicy(world["state-fp32"]))
    assert ends_a == ends_b and len(a) == len(b) > 100
    assert max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True)) < FP32_BOUND
    runner = OnnxPolicy(world["state-fp32"])
    assert torch.equal(episode_noise(runner, Variant("reach-v3", "heldout", 0), 3),
                       episode_noise(load_policy(world["state"])[0], Variant("reach-v3", "heldout", 0), 3))

    base = ["robot", "eval", "--tasks", "reach-v3", "--episodes", "1", "--videos", "0"]
    code, out, err = cli(*base, "--policy", world["state"], "--out", tmp_path / "torch")
    assert code == 0, err
    code, out, err = cli(*base, "--policy", world["state-fp32"], "--runtime", "onnx", "--out", tmp_path / "onnx")
    assert code == 0 and "onnx-fp32" in out, err
    rows = [(tmp_path / d / "episodes.jsonl").read_text() for d in ("torch", "onnx")]
    assert rows[0] == rows[1]
    assert json.loads((tmp_path / "onnx" / "summary.json").read_text())["runtime"] == "onnx-fp32"
    # the same policy, another runtime: a resume into the torch evaluation is refused
    code, _, err = cli(*base, "--policy", world["state-fp32"], "--runtime", "onnx", "--out", tmp_path / "torch")
    assert code == 2 and "other settings (runtime)" in err


def test_latency_through_onnx_runtime(world, cli) -> None:
    code, out, err = cli("robot", "latency", "--policy", world["pixels-fp32"], "--runtime", "onnx", "--task",
                         "reach-v3")
    if code and "EGL" in err + out:  # a pixel policy needs a rendered first frame
        code, out, err = cli("robot", "latency", "--policy", world["state-fp32"], "--runtime", "onnx", "--task",
                             "reach-v3")
    assert code == 0, err
    row = json.loads(out)
    assert row["runtime"] == "onnx-fp32" and list(row["ms_per_chunk"]) == ["3"] and row["ms_per_chunk"]["3"] > 0


def test_the_benchmark_script_runs(world, tmp_path) -> None:
    bench = load_script("bench_policy_onnx")
    row = bench.main(["--policy", str(world["state"]), "--observations", "40", "--source", "random", "--repeats",
                      "2", "--threads", "1", "--out", str(tmp_path / "b.json")])
    assert row["fp32"]["max_abs"] < FP32_BOUND and row["int8"]["mean_abs"] < INT8_BOUND
    assert row["observations"] == 40 and json.loads((tmp_path / "b.json").read_text()) == row


def test_bad_input_is_one_error_line_and_writes_nothing(world, tmp_path, cli) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "notapolicy").mkdir()
    (tmp_path / "afile").write_text("x")
    pol, graphs = world["state"], world["state-fp32"]
    ev = ["robot", "eval", "--tasks", "reach-v3", "--episodes", "1", "--out", tmp_path / "o1"]
    lat = ["robot", "latency", "--task", "reach-v3"]
    cases = [
        ("robot", "export", "--policy", tmp_path / "notapolicy", "--out", tmp_path / "o1"),
        ("robot", "export", "--policy", tmp_path / "missing", "--out", tmp_path / "o1"),
        ("robot", "export", "--policy", tmp_path / "afile", "--out", tmp_path / "o1"),
        ("robot", "export", "--policy", graphs, "--out", tmp_path / "o1"),  # an export is not a policy
        ("robot", "export", "--policy", pol, "--out", tmp_path / "o1", "--precision", "fp16"),
        ("robot", "export", "--policy", pol, "--out", tmp_path / "full"),
        ("robot", "export", "--policy", pol, "--out", tmp_path / "afile"),
        ("robot", "export", "--policy", pol, "--out", tmp_path / "o1", "--flow-steps", "0"),
        (*ev, "--policy", pol, "--runtime", "onnx"),  # a torch folder: export it first
        (*ev, "--policy", graphs),  # graphs without --runtime onnx
        (*ev, "--policy", graphs, "--runtime", "tensorrt"),
        (*ev, "--policy", graphs, "--runtime", "onnx", "--flow-steps", "2"),  # the graph unrolls 3
        (*ev, "--policy", graphs, "--runtime", "onnx", "--tasks", "window-open-v3"),  # not trained on it
        (*lat, "--policy", pol, "--runtime", "onnx"),
        (*lat, "--policy", graphs, "--runtime", "onnx", "--flow-steps", "1,2"),
    ]
    for args in cases:
        code, out, err = cli(*args)
        assert code == 2, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1, (args, err)
        assert not (tmp_path / "o1").exists(), args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "full", "notapolicy"]
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["x"]
