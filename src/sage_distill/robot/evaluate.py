"""Closed-loop evaluation of a control policy on Meta-World: success rate per task, on named variants.

Every episode is (task, protocol, seed). "heldout" seeds are positions never in any training set; "fixed"
is LeRobot's one position per task, where the seed only changes the policy's noise. Episodes run many at a
time (`EnvPool`); the policy is queried once per chunk for all episodes that need one, and executes
`n_action_steps` actions of it. Results go to `episodes.jsonl` as episodes finish, so a killed evaluation
resumes where it stopped; `summary.json`, `success.png` and a few GIFs are written at the end.
"""

from __future__ import annotations

import json
import logging
import re
import time
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..errors import SageError
from ..utils.io import atomic_write_json
from .envs import EnvPool, Variant
from .onnx_policy import OnnxPolicy
from .policies.sage_control import ControlPolicy
from .train import load_policy, policy_hash

log = logging.getLogger(__name__)


RUNTIMES = ("torch", "onnx")


def open_policy(folder: str | Path, runtime: str = "torch", device: str = "cpu"
                ) -> tuple[ControlPolicy | OnnxPolicy, list[str], str, str]:
    """(policy, trained tasks, sha256 of the torch policy, runtime label) of a policy folder (torch) or of a
    folder `robot export` wrote (onnx: ONNX Runtime's CPU provider; the sha256 is the exported policy's)."""
    if runtime not in RUNTIMES:
        raise SageError(f"must be one of {', '.join(RUNTIMES)}, got {runtime!r}", where="--runtime")
    if runtime == "torch":
        policy, tasks = load_policy(folder, device)
        return policy, tasks, policy_hash(folder), "torch"
    if torch.device(device).type != "cpu":
        raise SageError(f"--runtime onnx runs on the CPU (ONNX Runtime's CPU provider), not {device}",
                        where="--device")
    policy = OnnxPolicy(folder)
    return policy, policy.tasks, policy.policy_sha256, f"onnx-{policy.precision}"


def policy_batch(policy: ControlPolicy | OnnxPolicy, obs: list[dict[str, np.ndarray]], prev: list[np.ndarray],
                 device: torch.device) -> dict[str, torch.Tensor]:
    pos = np.stack([o["agent_pos"] for o in obs])
    batch = {"proprio": torch.from_numpy(np.concatenate([pos, pos - np.stack(prev)], 1)).float(),
             "task_index": torch.tensor([int(o["task_index"]) for o in obs])}
    if policy.cfg.obs == "pixels":
        batch["pixels"] = torch.from_numpy(np.stack([o["pixels"] for o in obs]))
    else:
        batch["state"] = torch.from_numpy(np.stack([o["state"] for o in obs])).float()
    return {k: v.to(device) for k, v in batch.items()}


def episode_noise(policy: ControlPolicy | OnnxPolicy, variant: Variant, query: int) -> torch.Tensor:
    """The initial noise of one chunk, a pure function of the episode and the query number."""
    key = zlib.crc32(f"{variant.task}/{variant.protocol}/{variant.seed}/{query}".encode())
    g = torch.Generator().manual_seed(key)
    return torch.randn(policy.cfg.chunk, policy.cfg.action_dim, generator=g)


def _save_gif(path: Path, frames: list[np.ndarray]) -> None:
    import imageio.v2 as imageio

    tmp = path.with_suffix(".tmp.gif")
    imageio.mimsave(tmp, frames[::2], duration=1000 / 40, loop=0)  # every 2nd step at 40 fps: real time
    tmp.replace(path)


def run_episodes(policy: ControlPolicy | OnnxPolicy, variants: list[Variant], pool: EnvPool, device: torch.device,
                 flow_steps: int | None = None, record: set[int] | None = None, on_done=None,
                 on_step=None) -> dict:
    """Roll out every variant to success or the step limit. Returns timing; calls on_done(i, success,
    steps, frames) as each episode ends. `on_step(ids, observations, actions)`, when given, sees every
    live episode's observation and the policy's action before each step and returns the (B, action_dim)
    actions executed instead (DAgger labels the states and mixes in the teacher); the policy's chunk
    queue runs on regardless."""
    obs = pool.reset(variants)
    live = dict(enumerate(obs))
    prev = {i: o["agent_pos"] for i, o in live.items()}
    queue: dict[int, list[np.ndarray]] = {i: [] for i in live}
    queries = defaultdict(int)
    steps = defaultdict(int)
    frames: dict[int, list[np.ndarray]] = {i: [] for i in (record or set())}
    calls, chunks, seconds = 0, 0, 0.0
    while live:
        need = [i for i in live if not queue[i]]
        if need:
            t0 = time.perf_counter()
            batch = policy_batch(policy, [live[i] for i in need], [prev[i] for i in need], device)
            noise = torch.stack([episode_noise(policy, variants[i], queries[i]) for i in need])
            with torch.no_grad():
                acts = policy.sample(batch, flow_steps, noise=noise).float().cpu().numpy()
            seconds += time.perf_counter() - t0
            calls, chunks = calls + 1, chunks + len(need)
            for i, a in zip(need, acts, strict=True):
                queue[i] = list(a[: policy.cfg.n_action_steps])
                queries[i] += 1
        actions = {i: queue[i].pop(0) for i in live}
        if on_step is not None:
            ids = list(live)
            chosen = on_step(ids, [live[i] for i in ids], np.stack([actions[i] for i in ids]))
            actions = dict(zip(ids, chosen, strict=True))
        for i in live:
            if i in frames and "pixels" in live[i]:
                frames[i].append(live[i]["pixels"])
        for i, (o, ok, out_of_time) in pool.step(actions).items():
            prev[i] = live[i]["agent_pos"]
            steps[i] += 1
            if ok or out_of_time:  # an episode ends at its first success, as in LeRobot's evaluation
                del live[i]
                if on_done:
                    on_done(i, ok, steps[i], frames.get(i))
            else:
                live[i] = o
    return {"calls": calls, "chunks": chunks, "policy_seconds": seconds}


SETTINGS_FILE = "eval_settings.json"  # what episodes.jsonl was run with; a resume must match it
_GIF_RE = re.compile(r"[A-Za-z0-9_-]+_(heldout|fixed)\d+_(ok|fail)(\.tmp)?\.gif")


def read_episodes(path: Path, settings: dict) -> dict[tuple, dict]:
    """The finished episodes of a partial evaluation, each checked against its settings. A last line cut short
    by a kill (no newline, not JSON) is dropped: that episode runs again. Anything else malformed is one
    SageError naming the line."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SageError(f"unreadable ({exc})", file=path) from None
    lines = text.split("\n")
    done: dict[tuple, dict] = {}
    tasks, episodes = set(settings["tasks"]), settings["episodes"]
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except ValueError:
            if n == len(lines):  # the unfinished write of a killed run
                continue
            raise SageError("not valid JSON; rerun with --restart to start afresh", file=path,
                            where=f"line {n}") from None
        ok = (isinstance(r, dict) and r.get("task") in tasks and r.get("protocol") == settings["protocol"]
              and isinstance(r.get("seed"), int) and not isinstance(r.get("seed"), bool)
              and 0 <= r["seed"] < episodes and r.get("flow_steps") == settings["flow_steps"]
              and isinstance(r.get("success"), bool) and isinstance(r.get("steps"), int)
              and not isinstance(r.get("steps"), bool) and r["steps"] >= 0)
        if not ok:
            raise SageError("not an episode of this evaluation's settings (task, protocol, seed < --episodes, "
                            "flow_steps, success, steps); rerun with --restart", file=path, where=f"line {n}")
        key = (r["task"], r["protocol"], r["seed"], r["flow_steps"])
        if key in done:
            raise SageError(f"episode {r['task']} seed {r['seed']} is listed twice", file=path, where=f"line {n}")
        done[key] = r
    return done


def _own_files(out: Path) -> list[Path]:
    """What `robot eval` writes in --out, and nothing else: --restart deletes these only."""
    names = ["episodes.jsonl", SETTINGS_FILE, "summary.json", "success.png", "success.tmp.png"]
    files = [out / n for n in names if (out / n).is_file()]
    tmp = re.compile(r"\.(summary\.json|eval_settings\.json)\.[A-Za-z0-9_]+\.tmp")
    files += [p for p in out.iterdir() if p.is_file() and tmp.fullmatch(p.name)] if out.is_dir() else []
    videos = out / "videos"
    if videos.is_dir():
        files += [p for p in videos.iterdir() if p.is_file() and _GIF_RE.fullmatch(p.name)]
    return files


def evaluate(policy_dir: str | Path, tasks: list[str], protocol: str, episodes: int, out: str | Path,
             device: str = "cpu", workers: int = 0, flow_steps: int | None = None, videos: int = 2,
             parallel: int = 500, restart: bool = False, runtime: str = "torch") -> dict:
    """Every check first (options, the policy, a partial run's settings and rows); only then is --out made.
    runtime "onnx": `policy_dir` is a folder from `robot export`, run by ONNX Runtime on the CPU."""
    if protocol not in ("heldout", "fixed"):
        raise SageError("must be heldout or fixed (train variants are what the policy was trained on)",
                        where="--protocol")
    if episodes < 1:
        raise SageError("must be at least 1", where="--episodes")
    if flow_steps is not None and not 1 <= flow_steps <= 64:
        raise SageError(f"must be 1..64, got {flow_steps}", where="--flow-steps")
    out, policy_dir = Path(out), Path(policy_dir)
    if out.exists() and not out.is_dir():
        raise SageError(f"{out} is an existing file; give a directory", where="--out")
    dev = torch.device(device)
    policy, trained, sha256, label = open_policy(policy_dir, runtime, device)
    if isinstance(policy, OnnxPolicy):
        policy.check_steps(flow_steps)
    unknown = [t for t in tasks if trained and t not in trained]
    if unknown:
        raise SageError(f"the policy was not trained on {', '.join(unknown)}", where="--tasks")
    log_path, settings_path = out / "episodes.jsonl", out / SETTINGS_FILE
    steps_k = flow_steps or policy.cfg.flow_steps
    settings = {"policy_sha256": sha256, "tasks": list(tasks), "protocol": protocol, "episodes": episodes,
                "flow_steps": steps_k}
    if label != "torch":  # absent for torch, so that evaluations from before the ONNX runtime still resume
        settings["runtime"] = label
    done = {}
    if not restart and log_path.exists():
        if not settings_path.is_file():
            raise SageError(f"a partial evaluation without {SETTINGS_FILE} (another version or command); rerun "
                            "with --restart to start afresh", file=log_path)
        try:
            saved = json.loads(settings_path.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            raise SageError("unreadable or truncated; rerun with --restart", file=settings_path) from None
        if not isinstance(saved, dict):
            raise SageError("expected a JSON object; rerun with --restart", file=settings_path)
        keys = [*settings, *(k for k in saved if k not in settings)]  # a runtime on one side only differs too
        differ = [k for k in keys if saved.get(k) != settings.get(k)]
        if differ:
            raise SageError(f"the partial evaluation in {out} was run with other settings ({', '.join(differ)}); "
                            "give the same ones, another --out, or --restart", where="--out")
        done = read_episodes(log_path, settings)
        text = log_path.read_bytes()
        if text and not text.endswith(b"\n"):  # a kill mid-line: end the file where the last whole row ends
            last = text[text.rfind(b"\n") + 1:]
            try:
                json.loads(last)
                keep = text + b"\n"
            except ValueError:
                keep = text[: text.rfind(b"\n") + 1]
            log_path.write_bytes(keep)
    if restart:
        for p in _own_files(out):
            p.unlink(missing_ok=True)
        if (out / "videos").is_dir() and not any((out / "videos").iterdir()):
            (out / "videos").rmdir()
    out.mkdir(parents=True, exist_ok=True)
    if restart or not log_path.exists():
        atomic_write_json(settings_path, settings, indent=1)
    todo = [Variant(t, protocol, s) for t in tasks for s in range(episodes)
            if (t, protocol, s, steps_k) not in done]
    image_size = policy.cfg.image_size if policy.cfg.obs == "pixels" else None
    videos_dir = out / "videos"
    timing = {"calls": 0, "chunks": 0, "policy_seconds": 0.0}
    bar = tqdm(total=len(tasks) * episodes, initial=len(tasks) * episodes - len(todo), desc="eval", unit="ep")
    with EnvPool(image_size=image_size, workers=workers) as pool, log_path.open("a") as log_file:
        for start in range(0, len(todo), parallel):
            wave = todo[start: start + parallel]
            # GIFs of the first `videos` seeds of each task (pixels only).
            record = {i for i, v in enumerate(wave) if v.seed < videos} if image_size else set()

            def finished(i: int, ok: bool, n: int, frames: list | None, wave=wave) -> None:
                v = wave[i]
                row = {"task": v.task, "protocol": v.protocol, "seed": v.seed, "flow_steps": steps_k,
                       "success": bool(ok), "steps": n}
                log_file.write(json.dumps(row) + "\n")
                log_file.flush()
                done[(v.task, v.protocol, v.seed, steps_k)] = row
                if frames:
                    videos_dir.mkdir(exist_ok=True)
                    _save_gif(videos_dir / f"{v.task}_{v.protocol}{v.seed}_{'ok' if ok else 'fail'}.gif", frames)
                bar.update(1)

            t = run_episodes(policy, wave, pool, dev, flow_steps, record, finished)
            for k in timing:
                timing[k] += t[k]
    bar.close()
    rows = [r for (t, p, s, k), r in done.items() if t in tasks and p == protocol and s < episodes and k == steps_k]
    per_task = {t: float(np.mean([r["success"] for r in rows if r["task"] == t])) for t in tasks}
    summary = {"policy": str(policy_dir), "protocol": protocol, "episodes_per_task": episodes,
               "flow_steps": steps_k, "device": device, "runtime": label,
               "mean_success": float(np.mean(list(per_task.values()))),
               "per_task": per_task, "mean_steps": float(np.mean([r["steps"] for r in rows])),
               "policy_ms_per_call": 1000 * timing["policy_seconds"] / max(1, timing["calls"]),
               "policy_ms_per_chunk": 1000 * timing["policy_seconds"] / max(1, timing["chunks"])}
    atomic_write_json(out / "summary.json", summary, indent=1)
    plot_success(per_task, out / "success.png", f"{Path(policy_dir).name}: {protocol} variants, "
                 f"{episodes} episodes/task, K={steps_k} (mean {summary['mean_success']:.1%})")
    return summary


def plot_success(per_task: dict[str, float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_task)
    fig, ax = plt.subplots(figsize=(max(6, 0.28 * len(names) + 2), 4))
    ax.bar(range(len(names)), [100 * per_task[n] for n in names], color="#3a7bd5")
    ax.set_xticks(range(len(names)), [n.removesuffix("-v3") for n in names], rotation=75, fontsize=7)
    ax.set_ylabel("success rate (%)")
    ax.set_xlabel("Meta-World task")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def chunk_latency(policy: ControlPolicy | OnnxPolicy, obs: dict[str, np.ndarray], device: str, flow_steps: int,
                  repeats: int = 30) -> float:
    """Median milliseconds to produce one action chunk for one observation (batch 1), encode included."""
    dev = torch.device(device)
    batch = policy_batch(policy, [obs], [obs["agent_pos"]], dev)
    times = []
    for _ in range(repeats + 3):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            policy.sample(batch, flow_steps)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times[3:]))
