"""Meta-World tasks as the robot side sees them: pixels from the `corner2` camera, 4-d proprio, 4-d action.

Where the objects and goal sit is one *variant*: a vector drawn from the task's own reset space. Variants
are named, never sampled behind our back, so training and evaluation positions can be kept apart:
- "train" variants: seeds 0, 1, 2, ... (the demonstrations come from these);
- "heldout" variants: seeds from HELDOUT_SEED0 on, checked to be none of the training vectors;
- "fixed": one variant per task, Meta-World's MT1(task, seed=42) first task, as LeRobot's evaluation
  builds it (the seed of an episode then varies only the policy's noise).

`EnvPool` steps many episodes at once, in worker processes when rendering (one MuJoCo context each).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import SageError

# EGL renders headless on the GPU machine and through Mesa on the CPU; it must be chosen before mujoco loads.
os.environ.setdefault("MUJOCO_GL", "egl")

Protocol = Literal["train", "heldout", "fixed"]
HELDOUT_SEED0 = 1_000_000
ACTION_DIM = 4
PROPRIO_DIM = 4
STATE_DIM = 39
CAMERA = "corner2"
# LeRobot moves corner2 here (their metaworld env, after arXiv 2206.14244) and flips its image both ways.
CORNER2_POS = (0.75, 0.075, 0.7)
MT10 = ("reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
        "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3")


@functools.cache
def _fixed_task(task: str) -> Any:
    """Meta-World's MT1(task, seed=42) first task: costs 50 resets, so built once per process."""
    import metaworld

    return metaworld.MT1(task, seed=42).train_tasks[0]


def all_tasks() -> list[str]:
    """The 50 Meta-World v3 tasks in name order; a task's one-hot index is its place here (LeRobot's ids)."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return sorted(ALL_V3_ENVIRONMENTS)


def task_set(name: str, option: str = "--tasks") -> list[str]:
    """`mt10`, `mt50`, or a comma-separated list of task names (`option`: where an error points)."""
    if name.lower() == "mt10":
        return list(MT10)
    if name.lower() == "mt50":
        return all_tasks()
    tasks = [t.strip() for t in name.split(",") if t.strip()]
    known = set(all_tasks())
    for t in tasks:
        if t not in known:
            raise SageError(f"unknown Meta-World task {t!r}; use mt10, mt50 or names such as push-v3", where=option)
    if not tasks:
        raise SageError("no task given", where=option)
    twice = next((t for i, t in enumerate(tasks) if t in tasks[:i]), None)
    if twice:
        raise SageError(f"{twice} is listed twice", where=option)
    return tasks


@dataclass(frozen=True)
class Variant:
    task: str
    protocol: Protocol
    seed: int

    def env_seed(self) -> int:
        """The seed of the env's own generator for this variant. Meta-World then draws the positions
        itself (some tasks redraw until object and goal are far enough apart). Train and held-out seeds
        come from disjoint ranges, and the task name enters, so two tasks with one seed differ."""
        if self.protocol == "fixed":
            raise ValueError("the fixed variant comes from Meta-World's task list, not from a seed")
        base = self.seed if self.protocol == "train" else HELDOUT_SEED0 + self.seed
        return int(np.random.SeedSequence([base, *self.task.encode()]).generate_state(1)[0])


class MetaWorldEnv:
    """One Meta-World task with named variants. Observations are dicts:
    `pixels` (H, W, 3) uint8 when rendering, `agent_pos` (4,) hand xyz + gripper, `state` (39,) full state,
    and `task_index` (the one-hot index)."""

    def __init__(self, task: str, image_size: int | None = None) -> None:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        self.task, self.image_size = task, image_size
        self.task_index = all_tasks().index(task)
        kwargs: dict[str, Any] = {}
        if image_size:
            kwargs = dict(render_mode="rgb_array", camera_name=CAMERA, width=image_size, height=image_size)
        env = ALL_V3_ENVIRONMENTS[task](**kwargs)
        if image_size:
            # Shadows, reflections and multisampling cost 10x the frame time and carry nothing a policy needs.
            env.model.light_castshadow[:] = 0
            env.model.mat_reflectance[:] = 0
            env.model.vis.quality.offsamples = 0
            env.model.cam_pos[env.model.camera(CAMERA).id] = CORNER2_POS
        # MT1's task makes the goal observable in `state` (the experts read it) and gives the fixed variant.
        env.set_task(_fixed_task(task))
        self._fixed_vector = np.array(env._last_rand_vec)
        self.env, self.max_steps = env, int(env.max_path_length)
        self.steps = 0

    def reset(self, variant: Variant) -> dict[str, np.ndarray]:
        if variant.task != self.task:
            raise ValueError(f"variant of {variant.task} given to the {self.task} env")
        if variant.protocol == "fixed":
            self.env._last_rand_vec, self.env._freeze_rand_vec = self._fixed_vector.copy(), True
        else:
            self.env._freeze_rand_vec, self.env.seeded_rand_vec = False, True
            self.env.seed(variant.env_seed())
        state, _ = self.env.reset()
        self.steps = 0
        return self._observe(state)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], bool, bool]:
        """(observation, success now, out of time): Meta-World's limit is 500 steps."""
        state, _reward, _term, truncated, info = self.env.step(np.clip(action, -1.0, 1.0).astype(np.float32))
        self.steps += 1
        return self._observe(state), bool(info["success"]), bool(truncated) or self.steps >= self.max_steps

    def _observe(self, state: np.ndarray) -> dict[str, np.ndarray]:
        obs = {"agent_pos": state[:PROPRIO_DIM].astype(np.float32), "state": state.astype(np.float32),
               "task_index": np.int64(self.task_index)}
        if self.image_size:
            obs["pixels"] = np.ascontiguousarray(np.flip(self.env.render(), (0, 1)))
        return obs

    def close(self) -> None:
        self.env.close()


# ---------------------------------------------------------------- many episodes at once


def _bind(cache: dict[str, list[MetaWorldEnv]], variants: list[Variant], image_size: int | None) -> list[MetaWorldEnv]:
    """One env object per episode, reusing the cached ones of each task (building one costs ~0.1 s)."""
    used: dict[str, int] = {}
    out = []
    for v in variants:
        k = used.get(v.task, 0)
        used[v.task] = k + 1
        pool = cache.setdefault(v.task, [])
        if k == len(pool):
            pool.append(MetaWorldEnv(v.task, image_size))
        out.append(pool[k])
    return out


def _worker(conn: Any, image_size: int | None) -> None:
    cache: dict[str, list[MetaWorldEnv]] = {}
    slots: list[MetaWorldEnv] = []
    while True:
        cmd, arg = conn.recv()
        try:
            if cmd == "reset":  # arg: the variants of this worker's slots
                slots = _bind(cache, arg, image_size)
                conn.send(("ok", [e.reset(v) for e, v in zip(slots, arg, strict=True)]))
            elif cmd == "step":  # arg: list of (slot, action)
                conn.send(("ok", [slots[i].step(a) for i, a in arg]))
            elif cmd == "close":
                for pool in cache.values():
                    for e in pool:
                        e.close()
                conn.send(("ok", None))
                return
        except Exception as exc:  # reported to the parent as one line, which raises it there
            conn.send(("error", f"env worker: {type(exc).__name__}: {exc}"))


class EnvPool:
    """Runs a list of episodes (variants) in lock-step: `reset()` then `step(actions)` for the live ones.

    With `workers=0` everything runs in this process (tests, state-only work); otherwise episodes are dealt
    round-robin to worker processes."""

    def __init__(self, variants: list[Variant] | None = None, image_size: int | None = None, workers: int = 0) -> None:
        self.variants, self.image_size = list(variants or []), image_size
        self.workers = max(0, workers)
        self._cache: dict[str, list[MetaWorldEnv]] = {}
        self._envs: list[MetaWorldEnv] = []
        self._place: list[tuple[int, int]] = []
        if self.workers == 0:
            return
        ctx = mp.get_context("spawn")  # a forked MuJoCo/EGL context is not safe to reuse
        self._conns, self._procs = [], []
        for _ in range(self.workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, image_size), daemon=True)
            proc.start()
            self._conns.append(parent)
            self._procs.append(proc)

    def _deal(self) -> list[tuple[int, int]]:
        """(worker, slot) for each episode, round-robin."""
        slots = [0] * self.workers
        place = []
        for i in range(len(self.variants)):
            w = i % self.workers
            place.append((w, slots[w]))
            slots[w] += 1
        return place

    def reset(self, variants: list[Variant] | None = None) -> list[dict[str, np.ndarray]]:
        """Start every episode; `variants` replaces the pool's list (a new wave on the same workers)."""
        if variants is not None:
            self.variants = list(variants)
        if self.workers == 0:
            self._envs = _bind(self._cache, self.variants, self.image_size)
            return [e.reset(v) for e, v in zip(self._envs, self.variants, strict=True)]
        self._place = self._deal()
        for w, conn in enumerate(self._conns):
            conn.send(("reset", [v for v, (pw, _) in zip(self.variants, self._place, strict=True) if pw == w]))
        per_worker = [self._recv(c) for c in self._conns]
        return [per_worker[w][s] for w, s in self._place]

    def step(self, actions: dict[int, np.ndarray]) -> dict[int, tuple[dict[str, np.ndarray], bool, bool]]:
        """actions: episode number -> action. Returns episode number -> (obs, success, out of time)."""
        if self.workers == 0:
            return {i: self._envs[i].step(a) for i, a in actions.items()}
        orders: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(self.workers)]
        owners: list[list[int]] = [[] for _ in range(self.workers)]
        for i, a in actions.items():
            w, s = self._place[i]
            orders[w].append((s, a))
            owners[w].append(i)
        for w, conn in enumerate(self._conns):
            if orders[w]:
                conn.send(("step", orders[w]))
        out = {}
        for w, conn in enumerate(self._conns):
            if orders[w]:
                out.update(zip(owners[w], self._recv(conn), strict=True))
        return out

    @staticmethod
    def _recv(conn: Any) -> Any:
        status, payload = conn.recv()
        if status != "ok":
            raise SageError(payload)
        return payload

    def close(self) -> None:
        if self.workers == 0:
            for pool in self._cache.values():
                for e in pool:
                    e.close()
            return
        for conn in self._conns:
            conn.send(("close", None))
        for conn, proc in zip(self._conns, self._procs, strict=True):
            conn.recv()
            proc.join(timeout=10)

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
