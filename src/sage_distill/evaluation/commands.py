"""What the `baseline`, `score` and `render` commands do (the CLI only dispatches here)."""

from __future__ import annotations

import json
from pathlib import Path

from ..arc.datasets import load_challenges, load_dataset, load_path, load_solutions
from ..arc.task import Task
from ..errors import ArcDataError, check_output_file


def baseline(challenges: Path, out: Path, method: str) -> None:
    from .baselines import BASELINES
    from .submission import write_predictions

    if method not in BASELINES:
        raise ArcDataError(f"unknown baseline '{method}'; choose one of {', '.join(BASELINES)}", file="--method")
    check_output_file(out)
    tasks = load_challenges(challenges)
    write_predictions(out, BASELINES[method](tasks))
    print(f"wrote {out}: {method} baseline for {len(tasks)} tasks")


def score(predictions: Path, solutions: Path, challenges: Path | None, as_json: bool) -> None:
    from .scoring import evaluate_files, format_table

    report = evaluate_files(predictions, solutions, challenges)
    print(json.dumps(report, indent=2) if as_json else format_table(report, name=predictions.name))


def render_command(dataset: str | None, split: str, file: Path | None, task_id: str | None,
                   predictions: Path | None, solutions: Path | None, cell_size: int, out: Path) -> None:
    """`render`: every option checked before the task is loaded, then one PNG written."""
    if cell_size < 2 or cell_size > 200:
        raise ArcDataError(f"must be 2-200 pixels, got {cell_size}", file="--cell-size")
    check_output_file(out)
    render(find_task(dataset, split, file, task_id, solutions), predictions, cell_size, out)


def find_task(dataset: str | None, split: str, file: Path | None, task_id: str | None,
              solutions: Path | None) -> Task:
    if bool(dataset) == bool(file):
        raise ArcDataError("give either --dataset NAME --task ID, or --file FILE")
    tasks = load_dataset(dataset, split) if dataset else load_path(file)
    if task_id is None:
        if len(tasks) != 1:
            raise ArcDataError(f"{len(tasks)} tasks in {file}: choose one with --task", file=str(file))
        task = tasks[0]
    else:
        by_id = {t.id: t for t in tasks}
        if task_id not in by_id:
            raise ArcDataError("no such task", file=str(file or f"{dataset} {split}"), task=task_id)
        task = by_id[task_id]
    if solutions is not None:
        answers = load_solutions(solutions)
        if task.id not in answers or len(answers[task.id]) != len(task.test_inputs):
            raise ArcDataError("no matching solutions for this task", file=str(solutions), task=task.id)
        task = Task(task.id, task.train, task.test_inputs, tuple(answers[task.id]))
    return task


def render(task: Task, predictions: Path | None, cell_size: int, out: Path) -> None:
    from ..arc.render import save_task_png
    from .submission import load_predictions

    entries = None
    if predictions is not None:
        entries = load_predictions(predictions).get(task.id, [])
    save_task_png(out, task, entries, cell_size)
    print(f"wrote {out}")
