"""What the `data` commands do (the CLI only dispatches here; `baseline`, `score` and `render` are in
`evaluation/commands.py`)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import check_output_dir
from .datasets import SHIPPED, SPLITS, find_duplicate_ids, load_dataset, scan_path


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
