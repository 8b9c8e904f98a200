"""What the `data`, `baseline`, `score` and `render` commands do (the CLI only dispatches here)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ArcDataError, check_output_dir, check_output_file
from .datasets import SHIPPED, SPLITS, find_duplicate_ids, load_dataset, load_path, load_solutions, scan_path
from .task import Task


def list_datasets() -> None:
    for name, ds in SHIPPED.items():
        sizes = ", ".join(f"{split} {len(load_dataset(name, split))}" for split in SPLITS)
        print(f"{name:<11} {sizes:<30} {ds.description}")


def stats(dataset: str, as_json: bool) -> None:
    from .stats import dataset_stats, format_stats

    result = dataset_stats(dataset)
    print(json.dumps(result, indent=2) if as_json else format_stats(result))


def validate(paths: list[Path]) -> list[str]:
    """Every problem in the given files, one line each (duplicate ids across files included)."""
    groups, problems = [], []
    for path in dict.fromkeys(paths):  # the same path twice is one file, not a duplicate of itself
        tasks, errors = scan_path(path)
        groups.append((str(path), tasks))
        problems += errors
    problems += find_duplicate_ids(groups)
    return [str(p) for p in problems]


def export(dataset: str, split: str, out_dir: Path) -> None:
    from .export import export_split

    check_output_dir(out_dir)
    challenges, solutions = export_split(dataset, split, out_dir)
    print(f"wrote {challenges} and {solutions}")


def baseline(challenges: Path, out: Path, method: str) -> None:
    from ..evaluation.baselines import BASELINES
    from ..evaluation.submission import write_predictions
    from .datasets import load_challenges

    if method not in BASELINES:
        raise ArcDataError(f"unknown baseline '{method}'; choose one of {', '.join(BASELINES)}", file="--method")
    check_output_file(out)
    tasks = load_challenges(challenges)
    write_predictions(out, BASELINES[method](tasks))
    print(f"wrote {out}: {method} baseline for {len(tasks)} tasks")


def score(predictions: Path, solutions: Path, challenges: Path | None, as_json: bool) -> None:
    from ..evaluation.scoring import evaluate_files, format_table

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
    from ..evaluation.submission import load_predictions
    from .render import save_task_png

    entries = None
    if predictions is not None:
        entries = load_predictions(predictions).get(task.id, [])
    save_task_png(out, task, entries, cell_size)
    print(f"wrote {out}")
