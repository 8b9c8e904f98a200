"""What the `robot` commands do, behind the CLI: each returns the line it prints."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import ConfigError


def collect_command(out: Path, tasks: str, episodes: int, image_size: int, workers: int,
                    after_success: int = 20) -> str:
    from .collect import collect
    from .envs import task_set

    if image_size < 0 or image_size % 2:
        raise ConfigError("must be 0 (state only) or an even number of pixels", where="--image-size")
    if after_success < 0:
        raise ConfigError("must be 0 or more", where="--after-success")
    s = collect(out, task_set(tasks), episodes, image_size or None, workers, after_success=after_success)
    return (f"wrote {s['demos']} expert demonstrations of {len(s['tasks'])} tasks to {out} "
            f"(expert success {s['expert_success']:.1%} on train variants)")


def train_command(data: Path, out: Path, config: Path | None, overrides: dict) -> str:
    from ..utils.config import load_config
    from .train import RobotTrainConfig, train

    given = {k: v for k, v in overrides.items() if v is not None}
    cfg = load_config(RobotTrainConfig, config, given, base={"data": data, "out": out}, what="robot training config")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    last = train(cfg)
    return f"trained {cfg.obs} policy to step {last.get('step')} (loss {last.get('loss', float('nan')):.4f}) in {out}"


def eval_command(policy: Path, tasks: str, protocol: str, episodes: int, out: Path, device: str, workers: int,
                 flow_steps: int | None, videos: int) -> str:
    from .envs import task_set
    from .evaluate import evaluate

    s = evaluate(policy, task_set(tasks), protocol, episodes, out, device, workers, flow_steps, videos)
    return (f"{protocol} variants, {episodes} episodes/task, K={s['flow_steps']}: mean success "
            f"{s['mean_success']:.1%} over {len(s['per_task'])} tasks; {out / 'summary.json'}")


def convert_command(src: Path, out: Path) -> str:
    from .datasets import convert

    ds = convert(src, out)
    return f"converted to LeRobot {ds.version}: {len(ds.episodes)} episodes in {out}" + (
        f" (fixes: {'; '.join(ds.fixes)})" if ds.fixes else "")


def show_command(path: Path, as_json: bool) -> str:
    from .datasets import describe, open_dataset

    ds = open_dataset(path)
    if as_json:
        return json.dumps({"version": ds.version, "fps": ds.fps, "episodes": len(ds.episodes),
                           "frames": sum(e.length for e in ds.episodes), "fixes": ds.fixes})
    return describe(ds)


def latency_command(policy: Path, device: str, task: str, steps: list[int]) -> str:
    """Batch-1 milliseconds per action chunk for each number of Euler steps, on a real first frame."""
    from .envs import MetaWorldEnv, Variant
    from .evaluate import chunk_latency
    from .train import load_policy

    model, _ = load_policy(policy, device)
    size = model.cfg.image_size if model.cfg.obs == "pixels" else None
    env = MetaWorldEnv(task, size)
    obs = env.reset(Variant(task, "heldout", 0))
    env.close()
    rows = {k: chunk_latency(model, obs, device, k) for k in steps}
    return json.dumps({"policy": str(policy), "device": device, "batch": 1,
                       "ms_per_chunk": {str(k): round(v, 3) for k, v in rows.items()}})
