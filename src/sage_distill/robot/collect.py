"""Expert demonstrations into a LeRobot v3.0 dataset: seeded, resumable, successes only.

Episode k of a task uses the "train" variant with seed k (see robot.envs), so the positions the student
is trained on are known exactly and never overlap the held-out ones. The dataset's per-episode metadata
carries `task_name`, `seed` and `variant`. A kill loses at most the wave in flight; re-running the same
command skips every seed already written or already known to fail (`collect_state.json`).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import SageError
from ..utils.io import atomic_write_json
from .datasets import LeRobotWriter
from .envs import ACTION_DIM, CAMERA, PROPRIO_DIM, STATE_DIM, EnvPool, Variant
from .teacher import MetaWorldExpert

log = logging.getLogger(__name__)
FPS = 80  # Meta-World: 5 frames of 2.5 ms per control step
IMAGE_KEY = f"observation.images.{CAMERA}"


def features(image_size: int | None) -> dict[str, dict]:
    feats: dict[str, dict] = {
        "observation.state": {"dtype": "float32", "shape": [PROPRIO_DIM], "names": ["x", "y", "z", "gripper"]},
        "observation.environment_state": {"dtype": "float32", "shape": [STATE_DIM], "names": None},
        "action": {"dtype": "float32", "shape": [ACTION_DIM], "names": ["dx", "dy", "dz", "grip"]},
    }
    if image_size:
        feats[IMAGE_KEY] = {"dtype": "video", "shape": [image_size, image_size, 3],
                            "names": ["height", "width", "channel"]}
    return feats


def _run_wave(pool: EnvPool, variants: list[Variant], expert: MetaWorldExpert, image_size: int | None,
              after_success: int) -> list[tuple[Variant, bool, dict[str, np.ndarray]]]:
    """Roll the expert out on every variant until `after_success` steps past its first success, or the
    step limit. The steps past success matter: an episode cut at the success threshold never shows the
    student what to do *at* the threshold, and a student that stops a hair short hovers there."""
    obs = pool.reset(variants)
    frames: list[dict[str, list]] = [{k: [] for k in features(image_size)} for _ in variants]
    live = {i: o for i, o in enumerate(obs)}
    success = [False] * len(variants)
    since = [0] * len(variants)  # steps since the first success
    while live:
        ids = list(live)
        actions = expert.act([live[i] for i in ids], [variants[i].task for i in ids])
        for i, a in zip(ids, actions, strict=True):
            o, f = live[i], frames[i]
            f["observation.state"].append(o["agent_pos"])
            f["observation.environment_state"].append(o["state"])
            f["action"].append(a)
            if image_size:
                f[IMAGE_KEY].append(o["pixels"])
        for i, (o, ok, out_of_time) in pool.step(dict(zip(ids, actions, strict=True))).items():
            success[i] = success[i] or ok
            since[i] += success[i]
            if out_of_time or (success[i] and since[i] > after_success):
                del live[i]
            else:
                live[i] = o
    return [(v, ok, {k: np.stack(x) for k, x in f.items()})
            for v, ok, f in zip(variants, success, frames, strict=True)]


STATE_FILE = "collect_state.json"  # {"failed": [[task, seed], ...]}: written first, it marks the folder as ours


def read_collect_state(out: Path) -> list[list]:
    """The (task, seed) pairs known to fail, from `collect_state.json`; one SageError when it is malformed."""
    path = out / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise SageError(f"unreadable or truncated ({' '.join(str(exc).split())[:150]}); delete it to retry "
                        "the failed seeds", file=path) from None
    failed = state.get("failed") if isinstance(state, dict) else None
    if not isinstance(failed, list):
        raise SageError("expected an object with a 'failed' list", file=path)
    for i, pair in enumerate(failed):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
                and isinstance(pair[1], int) and not isinstance(pair[1], bool) and pair[1] >= 0):
            raise SageError(f"expected [task, seed], got {str(pair)[:40]}", file=path, where=f"failed[{i}]")
    return failed


def check_collect_out(out: Path, image_size: int | None) -> None:
    """`--out` can take this collection: absent, empty, or a dataset an earlier `robot collect` made (its state
    file valid, its info.json of the same features). Nothing is written here."""
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / STATE_FILE).is_file():
        raise SageError(f"{out} exists, is not empty and is not a dataset `robot collect` made (no {STATE_FILE}); "
                        "give a new or empty folder", where="--out")
    read_collect_state(out)
    info = out / "meta" / "info.json"
    if info.is_file():
        LeRobotWriter.check_resumable(out, fps=FPS, features=features(image_size))


def collect(out: str | Path, tasks: list[str], episodes: int, image_size: int | None = 128, workers: int = 0,
            max_attempts: int = 3, wave: int = 64, episodes_per_file: int = 50, after_success: int = 20) -> dict:
    """Write `episodes` successful expert demonstrations per task into `out` (LeRobot v3.0)."""
    if episodes < 1:
        raise SageError("must be at least 1", where="--episodes")
    out = Path(out)
    check_collect_out(out, image_size)
    state_path = out / STATE_FILE
    failed: list[list] = read_collect_state(out) if state_path.is_file() else []
    writer = LeRobotWriter(out, fps=FPS, robot_type="sawyer", features=features(image_size),
                           episodes_per_file=episodes_per_file)
    atomic_write_json(state_path, {"failed": failed})  # first: it marks the folder as a collection's
    tried = {(e.extra["task_name"], int(e.extra["seed"])) for e in writer.done()} | {(t, s) for t, s in failed}
    have = Counter(e.extra["task_name"] for e in writer.done())
    next_seed = {t: 1 + max([s for (n, s) in tried if n == t], default=-1) for t in tasks}
    expert = MetaWorldExpert()
    bar = tqdm(total=episodes * len(tasks), initial=sum(min(have[t], episodes) for t in tasks),
               desc="collect", unit="ep")
    with EnvPool(image_size=image_size, workers=workers) as pool:
        while True:
            todo = [t for t in tasks if have[t] < episodes and next_seed[t] < max_attempts * episodes]
            if not todo:
                break
            variants: list[Variant] = []
            for t in todo:  # a fair share of the wave for every task still short
                n = min(episodes - have[t], max(1, wave // len(todo)), max_attempts * episodes - next_seed[t])
                variants += [Variant(t, "train", next_seed[t] + k) for k in range(n)]
                next_seed[t] += n
            for v, ok, frames in _run_wave(pool, variants, expert, image_size, after_success):
                if ok:
                    writer.add_episode(frames, task=v.task, extra={"task_name": v.task, "seed": v.seed,
                                                                   "variant": "train", "after_success": after_success})
                    have[v.task] += 1
                    bar.update(1)
                else:
                    failed.append([v.task, v.seed])
            # The data first, then the failures: a kill in between only retries a failure.
            writer.flush()
            atomic_write_json(state_path, {"failed": failed})
    writer.close()
    bar.close()
    attempts = Counter(t for t, _ in failed) + have
    summary = {"tasks": {t: {"demos": have[t], "attempts": attempts[t],
                             "expert_success": have[t] / max(1, attempts[t])} for t in tasks}}
    summary["demos"] = sum(have[t] for t in tasks)
    summary["expert_success"] = summary["demos"] / max(1, sum(attempts[t] for t in tasks))
    atomic_write_json(out / "collect_summary.json", summary, indent=1)
    short = [t for t in tasks if have[t] < episodes]
    if short:
        log.warning("fewer than %d demonstrations for %s (expert failures)", episodes, ", ".join(short))
    return summary
