"""What the `robot` commands do, behind the CLI: each returns the line it prints."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import ConfigError

MAX_EPISODES = 10_000
MAX_WORKERS = 64
MAX_FLOW_STEPS = 64


def _bounded(value: int, lo: int, hi: int, option: str) -> int:
    if not lo <= value <= hi:
        raise ConfigError(f"must be {lo}..{hi}, got {value}", where=option)
    return value


def collect_command(out: Path, tasks: str, episodes: int, image_size: int, workers: int,
                    after_success: int = 20) -> str:
    from ..errors import check_output_dir
    from .collect import check_collect_out, collect
    from .envs import task_set

    if image_size != 0 and (not 32 <= image_size <= 512 or image_size % 2):
        raise ConfigError(f"must be 0 (state only) or an even number of pixels 32..512, got {image_size}",
                          where="--image-size")
    _bounded(episodes, 1, MAX_EPISODES, "--episodes")
    _bounded(workers, 0, MAX_WORKERS, "--workers")
    _bounded(after_success, 0, 500, "--after-success")
    names = task_set(tasks)
    check_output_dir(out)
    check_collect_out(out, image_size or None)
    s = collect(out, names, episodes, image_size or None, workers, after_success=after_success)
    return (f"wrote {s['demos']} expert demonstrations of {len(s['tasks'])} tasks to {out} "
            f"(expert success {s['expert_success']:.1%} on train variants)")


def _load_robot_config(model, data: Path, out: Path, config: Path | None, overrides: dict, what: str):
    """`model` from the YAML with the options over it (None: not given), the device, --data a folder and --out
    usable: the checks `robot train` and `robot dagger` share."""
    from ..errors import check_output_dir
    from ..utils.config import load_config
    from ..utils.device import check_device

    given = {k: v for k, v in overrides.items() if v is not None}
    cfg = load_config(model, config, given, base={"data": data, "out": out}, what=what)
    check_device(cfg.device, "--device" if "device" in given or config is None else f"{config}: device")
    if not cfg.data.is_dir():
        raise ConfigError(f"{cfg.data} is not a dataset folder", where="--data")
    check_output_dir(cfg.out)
    return cfg


def train_command(data: Path, out: Path, config: Path | None, overrides: dict) -> str:
    from .train import RobotTrainConfig, check_resume_state, train

    cfg = _load_robot_config(RobotTrainConfig, data, out, config, overrides, "robot training config")
    check_resume_state(cfg.out)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    last = train(cfg)
    return f"trained {cfg.obs} policy to step {last.get('step')} (loss {last.get('loss', float('nan')):.4f}) in {out}"


def dagger_command(data: Path, out: Path, config: Path | None, overrides: dict) -> str:
    """`robot dagger`: options over the YAML (`dagger.rounds` style keys), every check before anything is
    written (the config, the starting dataset and policy, the teacher, a resumed run's settings)."""
    from .dagger import RobotDaggerConfig, dagger

    cfg = _load_robot_config(RobotDaggerConfig, data, out, config, overrides, "robot DAgger config")
    if cfg.out.resolve().is_relative_to(cfg.data.resolve()):
        raise ConfigError(f"{cfg.out} is inside the starting dataset {cfg.data}; give a folder outside it",
                          where="--out")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = dagger(cfg)
    last = rows[-1]
    success = f"; round {last['round']} rollout success {last['rollout_success']:.1%}" if "rollout_success" in last \
        else ""
    return (f"DAgger rounds 0..{last['round']} in {out}: dataset {last['dataset_episodes']} episodes, "
            f"{last['dataset_frames']} frames{success}; student {out / last['policy']}; {out / 'rounds.jsonl'}")


def eval_command(policy: Path, tasks: str, protocol: str, episodes: int, out: Path, device: str, workers: int,
                 flow_steps: int | None, videos: int, restart: bool = False, runtime: str = "torch",
                 parallel: int = 500) -> str:
    from ..errors import check_output_dir
    from ..utils.device import check_device
    from .envs import task_set
    from .evaluate import evaluate

    if protocol not in ("heldout", "fixed"):
        raise ConfigError("must be heldout or fixed (train variants are what the policy was trained on)",
                          where="--protocol")
    _bounded(episodes, 1, MAX_EPISODES, "--episodes")
    _bounded(workers, 0, MAX_WORKERS, "--workers")
    _bounded(videos, 0, 100, "--videos")
    _bounded(parallel, 1, 10_000, "--parallel")
    if flow_steps is not None:
        _bounded(flow_steps, 1, MAX_FLOW_STEPS, "--flow-steps")
    names = task_set(tasks)
    check_device(device)
    check_output_dir(out)
    s = evaluate(policy, names, protocol, episodes, out, device, workers, flow_steps, videos, parallel=parallel,
                 restart=restart, runtime=runtime)
    return (f"{protocol} variants, {episodes} episodes/task, K={s['flow_steps']}, {s['runtime']}: mean success "
            f"{s['mean_success']:.1%} over {len(s['per_task'])} tasks; {out / 'summary.json'}")


def convert_command(src: Path, out: Path) -> str:
    from ..errors import check_output_dir
    from .datasets import convert

    check_output_dir(out)
    if src.exists() and out.resolve().is_relative_to(src.resolve()):
        raise ConfigError(f"{out} is inside the source dataset {src}; give a folder outside it", where="--out")
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


def parse_flow_steps(text: str) -> list[int]:
    """`--flow-steps 1,2,4,8` of `robot latency`: each 1..64, at least one, none twice."""
    steps = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            k = int(part)
        except ValueError:
            raise ConfigError(f"{part!r} is not a whole number (comma-separated step counts)",
                              where="--flow-steps") from None
        steps.append(_bounded(k, 1, MAX_FLOW_STEPS, "--flow-steps"))
    if not steps:
        raise ConfigError("no step count given", where="--flow-steps")
    if len(set(steps)) != len(steps):
        raise ConfigError("a step count is given twice", where="--flow-steps")
    return steps


def latency_command(policy: Path, device: str, task: str, steps: str | list[int] | None = None,
                    runtime: str = "torch") -> str:
    """Batch-1 milliseconds per action chunk for each number of Euler steps (`--flow-steps 1,2,4,8`; onnx: the
    graph's one number, the default there), on a real first frame of one task."""
    from ..utils.device import check_device
    from .envs import MetaWorldEnv, Variant, task_set
    from .evaluate import chunk_latency, open_policy
    from .onnx_policy import OnnxPolicy

    names = task_set(task, "--task")
    if len(names) != 1:
        raise ConfigError(f"give one task, got {len(names)}", where="--task")
    task = names[0]
    if isinstance(steps, str):
        steps = parse_flow_steps(steps)
    elif steps is not None:
        steps = [_bounded(k, 1, MAX_FLOW_STEPS, "--flow-steps") for k in steps]
    check_device(device)
    model, trained, _, label = open_policy(policy, runtime, device)
    if isinstance(model, OnnxPolicy):
        steps = [model.check_steps(k) for k in steps or [None]]
    if trained and task not in trained:
        raise ConfigError(f"the policy was not trained on {task}", where="--task")
    size = model.cfg.image_size if model.cfg.obs == "pixels" else None
    env = MetaWorldEnv(task, size)
    obs = env.reset(Variant(task, "heldout", 0))
    env.close()
    rows = {k: chunk_latency(model, obs, device, k) for k in steps or [1, 2, 4, 8]}
    return json.dumps({"policy": str(policy), "device": device, "runtime": label, "batch": 1,
                       "ms_per_chunk": {str(k): round(v, 3) for k, v in rows.items()}})


def quantize_command(policy: Path, out: Path, precision: str) -> str:
    """`robot quantize`: the policy folder re-stored in bf16 or int8 (every command reads it; the release's
    precision), written whole or not at all."""
    from ..errors import check_new_output_dir
    from ..utils.onnx_export import staged_folder
    from .train import load_policy, save_policy

    if precision not in ("bf16", "int8"):
        raise ConfigError(f"unsupported precision {precision!r}; use bf16 or int8", where="--precision")
    out = check_new_output_dir(out)
    model, tasks = load_policy(policy)  # a SageError when it is not a policy folder
    with staged_folder(out) as tmp:
        save_policy(tmp, model.state_dict(), model.cfg, tasks, precision)
    size = (out / "model.safetensors").stat().st_size / 1e6
    return f"wrote {out} ({precision}, {size:.2f} MB of weights, {len(tasks)} tasks)"


def export_command(policy: Path, out: Path, precision: str, flow_steps: int | None) -> str:
    """`robot export`: the policy as one ONNX graph per action chunk (robot/onnx_policy.py)."""
    from .onnx_policy import GRAPH, MANIFEST, export_policy

    if flow_steps is not None:
        _bounded(flow_steps, 1, MAX_FLOW_STEPS, "--flow-steps")
    r = export_policy(policy, out, precision, flow_steps)
    return (f"wrote {r['out']}: {GRAPH}, {MANIFEST} ({r['precision']}, K={r['flow_steps']} Euler steps per chunk, "
            f"{r['megabytes']} MB, {r['seconds']} s)")
