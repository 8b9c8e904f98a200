"""Small synthetic ARC worlds for the model, training and predict tests: tasks with 2x3 grids so a
packed row of a few hundred tokens holds many pairs and a CPU step takes milliseconds."""

from __future__ import annotations

import numpy as np

from sage_distill.arc.task import Pair, Task


def small_task(seed: int, n_train: int = 3, n_test: int = 1, task_id: str | None = None) -> Task:
    """Rule: swap colours 1 and 2. Grids differ per seed, so fingerprints differ."""
    rng = np.random.default_rng(seed)

    def pair() -> Pair:
        g = rng.integers(0, 4, (int(rng.integers(1, 4)), int(rng.integers(1, 4)))).astype(np.uint8)
        return Pair(g, np.where(g == 1, 2, np.where(g == 2, 1, g)).astype(np.uint8))

    train = tuple(pair() for _ in range(n_train))
    tests = [pair() for _ in range(n_test)]
    return Task(task_id or f"task{seed:03d}", train, tuple(p.input for p in tests), tuple(p.output for p in tests))


def small_world(monkeypatch, n_train_tasks: int = 6, n_eval_tasks: int = 3) -> dict[str, list[Task]]:
    """Make `load_dataset` serve synthetic sets: ('w', 'training') and ('w', 'evaluation')."""
    import sage_distill.training.data as data

    world = {"training": [small_task(i) for i in range(n_train_tasks)],
             "evaluation": [small_task(100 + i, task_id=f"eval{i:03d}") for i in range(n_eval_tasks)]}
    monkeypatch.setattr(data, "load_dataset", lambda name, split: list(world[split]))
    return world
