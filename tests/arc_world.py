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


def tiny_model_world(root, n_tasks: int):
    """`n_tasks` small tasks as an answer-free challenges file, and a random tiny SAGE model folder with a
    row for all but the last task (which is unknown to it): (tasks, challenges path, model folder)."""
    import json

    import torch

    from sage_distill.arc.task import fingerprint
    from sage_distill.student import SageConfig, SageModel
    from sage_distill.student.checkpoint import save_model

    tasks = [small_task(i, n_test=1 + i % 2) for i in range(n_tasks)]
    challenges = root / "challenges.json"
    challenges.write_text(json.dumps({t.id: t.to_json(with_answers=False) for t in tasks}))
    torch.manual_seed(0)
    model = SageModel(SageConfig.preset("tiny").model_copy(update={"num_tasks": 3}))
    save_model(root / "model", model, [fingerprint(t.without_answers()) for t in tasks[:3]])
    return tasks, challenges, root / "model"
