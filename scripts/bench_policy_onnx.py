"""The control policy through torch and through ONNX Runtime on the CPU, side by side: batch-1 milliseconds
per action chunk (median of --repeats, after 3 warm-ups; `chunk_latency`) and the max |action difference|
over --observations observations with the same noise, for each --precision.

    python scripts/bench_policy_onnx.py --policy models/sage-control --observations 1000
    python scripts/bench_policy_onnx.py --config configs/robot-pixels.yaml --source random   # untrained

--policy: a trained policy folder. --config: a `robot train` YAML whose model is built untrained (seed 0),
with the FiLM layers drawn like any other layer: they start at zero in training, which would leave the
chunk independent of the observation and the encoder untested. --source recorded: observations the
Meta-World expert visits on held-out variants of the policy's tasks (MT10 for --config), rendered when the
policy reads pixels (needs EGL); random: uniform pixels, normal state and proprio, random MT10 tasks.
Prints one JSON object (also written to --out when given)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sage_distill.robot.envs import MT10, EnvPool, Variant, all_tasks
from sage_distill.robot.evaluate import chunk_latency, policy_batch
from sage_distill.robot.onnx_policy import OnnxPolicy, export_policy
from sage_distill.robot.policies.sage_control import ControlConfig, ControlPolicy
from sage_distill.robot.train import load_policy, save_policy


def untrained(config: Path, image_size: int, folder: Path) -> Path:
    """The model of a `robot train` YAML, randomly initialised (FiLM included), saved as a policy folder."""
    import yaml

    y = yaml.safe_load(config.read_text()) or {}
    keys = ("obs", "chunk", "n_action_steps", "width", "depth", "flow_steps")
    cfg = ControlConfig(image_size=image_size, num_tasks=len(all_tasks()), **{k: y[k] for k in keys if k in y})
    torch.manual_seed(0)
    policy = ControlPolicy(cfg)
    for block in policy.blocks:
        block.film.reset_parameters()
    save_policy(folder, policy.state_dict(), cfg, list(MT10))
    return folder


def recorded(policy: ControlPolicy, tasks: list[str], n: int) -> list[tuple[dict, np.ndarray]]:
    """(observation, previous proprio) pairs the expert visits on held-out episodes of `tasks`, step by step."""
    from sage_distill.robot.teacher import MetaWorldExpert

    size = policy.cfg.image_size if policy.cfg.obs == "pixels" else None
    expert, out, seed = MetaWorldExpert(), [], 0
    with EnvPool(image_size=size) as pool:
        while len(out) < n:  # episodes of every task side by side, seed after seed, until n are seen
            live = dict(enumerate(pool.reset([Variant(t, "heldout", seed) for t in tasks])))
            prev = {i: o["agent_pos"] for i, o in live.items()}
            seed += 1
            while live and len(out) < n:
                ids = list(live)
                out += [(live[i], prev[i]) for i in ids]
                acts = expert.act([live[i] for i in ids])
                for i, (o, ok, end) in pool.step(dict(zip(ids, acts, strict=True))).items():
                    prev[i] = live[i]["agent_pos"]
                    if ok or end:
                        del live[i]
                    else:
                        live[i] = o
    return out[:n]


def random_obs(cfg: ControlConfig, n: int, seed: int = 0) -> list[tuple[dict, np.ndarray]]:
    rng = np.random.default_rng(seed)
    names = all_tasks()
    out = []
    for _ in range(n):
        o = {"agent_pos": rng.normal(size=cfg.proprio_dim).astype(np.float32),
             "task_index": names.index(MT10[rng.integers(len(MT10))])}
        if cfg.obs == "pixels":
            o["pixels"] = rng.integers(0, 256, (cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
        else:
            o["state"] = rng.normal(size=cfg.state_dim).astype(np.float32)
        out.append((o, o["agent_pos"] + 0.01 * rng.normal(size=cfg.proprio_dim).astype(np.float32)))
    return out


def max_difference(policy: ControlPolicy, runner: OnnxPolicy, pairs: list, batch: int = 50) -> dict:
    """Max and mean |torch - ONNX Runtime| over every action of every observation's chunk, same noise."""
    g = torch.Generator().manual_seed(0)
    worst, total, count = 0.0, 0.0, 0
    for s in range(0, len(pairs), batch):
        part = pairs[s: s + batch]
        b = policy_batch(policy, [o for o, _ in part], [p for _, p in part], torch.device("cpu"))
        noise = torch.randn(len(part), policy.cfg.chunk, policy.cfg.action_dim, generator=g)
        with torch.no_grad():
            diff = (policy.sample(b, noise=noise) - runner.sample(b, noise=noise)).abs()
        worst, total, count = max(worst, diff.max().item()), total + diff.sum().item(), count + diff.numel()
    return {"max_abs": worst, "mean_abs": total / count}


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--policy", type=Path, help="trained policy folder (robot train)")
    src.add_argument("--config", type=Path, help="robot train YAML: its model, untrained")
    ap.add_argument("--image-size", type=int, default=128, help="with --config: frame size (pixels)")
    ap.add_argument("--observations", type=int, default=1000)
    ap.add_argument("--source", choices=("recorded", "random"), default="recorded")
    ap.add_argument("--repeats", type=int, default=50, help="batch-1 chunks timed per runtime (median)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="fp32,int8")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.policy or untrained(args.config, args.image_size, Path(tmp) / "policy")
        policy, tasks = load_policy(folder)
        t0 = time.perf_counter()
        pairs = (recorded(policy, tasks or list(MT10), args.observations) if args.source == "recorded"
                 else random_obs(policy.cfg, args.observations))
        obs_s = time.perf_counter() - t0
        first = pairs[0][0]
        k = policy.cfg.flow_steps
        row = {"policy": str(args.policy or args.config), "trained": args.policy is not None,
               "config": policy.cfg.model_dump(mode="json"),
               "parameters": sum(p.numel() for p in policy.parameters()), "observations": len(pairs),
               "source": args.source, "threads": args.threads, "batch": 1, "repeats": args.repeats,
               "torch_ms_per_chunk": round(chunk_latency(policy, first, "cpu", k, args.repeats), 3)}
        for precision in args.precision.split(","):
            t0 = time.perf_counter()
            export_policy(folder, Path(tmp) / precision, precision)
            export_s = time.perf_counter() - t0
            runner = OnnxPolicy(Path(tmp) / precision, threads=args.threads)
            ms = chunk_latency(runner, first, "cpu", k, args.repeats)
            row[precision] = {"ms_per_chunk": round(ms, 3), "speedup": round(row["torch_ms_per_chunk"] / ms, 2),
                              "export_s": round(export_s, 1), **max_difference(policy, runner, pairs)}
    row.update({"observation_s": round(obs_s, 1), "date": time.strftime("%Y-%m-%d"), "commit": commit(),
                "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
                "cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]})
    text = json.dumps(row, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return row


if __name__ == "__main__":
    main(sys.argv[1:])
