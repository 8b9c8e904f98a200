"""Export a shipped split in the ARC Prize layout: challenges.json without any test output, and
solutions.json apart, so a predictor given the challenges file cannot see an answer."""

from __future__ import annotations

from pathlib import Path

from ..errors import ArcDataError
from ..utils.io import atomic_write_json
from .datasets import load_dataset


def export_split(dataset: str, split: str, out_dir: str | Path) -> tuple[Path, Path]:
    tasks = load_dataset(dataset, split)
    missing = [t.id for t in tasks if t.test_outputs is None]
    if missing:
        raise ArcDataError(f"{len(missing)} tasks have no test outputs, e.g. {missing[0]}: cannot write solutions")
    out_dir = Path(out_dir)
    challenges, solutions = out_dir / "challenges.json", out_dir / "solutions.json"
    atomic_write_json(challenges, {t.id: t.to_json(with_answers=False) for t in tasks})
    atomic_write_json(solutions, {t.id: [g.tolist() for g in t.test_outputs or ()] for t in tasks})
    return challenges, solutions
