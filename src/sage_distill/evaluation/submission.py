"""The ARC Prize submission format: {task_id: [{"attempt_1": grid, "attempt_2": grid}, ...]}, one entry
per test input, in order. Reading validates every grid; a malformed one is a PredictionError that names
the file, task and entry, because a scorer that quietly skipped it would report a score nobody earned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..arc.validate import parse_grid
from ..errors import ArcDataError, PredictionError, check_task_id
from ..utils.io import atomic_write_json, read_json

ATTEMPTS = ("attempt_1", "attempt_2")

# task id -> one dict per test input, attempt name -> grid. attempt_2 may be absent (no second guess).
Submission = dict[str, list[dict[str, np.ndarray]]]


def parse_predictions(obj: Any, *, file: str | None = None) -> Submission:
    """Validate a submission object (JSON lists or numpy arrays as grids) into numpy grids."""
    where = f"{file}: " if file else ""
    if not isinstance(obj, dict):
        raise PredictionError(f"{where}top level must be an object of task_id -> [entry, ...], "
                              f"got {type(obj).__name__}")
    out: Submission = {}
    for tid, entries in obj.items():
        try:
            check_task_id(tid, file=file)
        except ArcDataError as e:
            raise PredictionError(e.problem, file=file) from None
        if not isinstance(entries, list):
            raise PredictionError(f"{where}task {tid}: must be a list of entries, got {type(entries).__name__}")
        out[str(tid)] = [_parse_entry(e, where, str(tid), i) for i, e in enumerate(entries)]
    return out


def _parse_entry(entry: Any, where: str, tid: str, index: int) -> dict[str, np.ndarray]:
    place = f"{where}task {tid}, entry {index}"
    if not isinstance(entry, dict):
        raise PredictionError(f"{place}: must be an object with attempt_1/attempt_2, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(ATTEMPTS))
    if unknown:  # e.g. an attempt_3 must not be scored as if it were allowed
        raise PredictionError(f"{place}: unknown keys {unknown}; only attempt_1 and attempt_2 are allowed")
    if "attempt_1" not in entry:
        raise PredictionError(f"{place}: missing attempt_1")
    parsed = {}
    for name in ATTEMPTS:
        if name not in entry:
            continue
        grid = entry[name]
        if isinstance(grid, np.ndarray):
            grid = grid.tolist()
        try:
            parsed[name] = parse_grid(grid, file=None, task=None, place=name)
        except ArcDataError as e:
            raise PredictionError(f"{place}, {e}") from None
    return parsed


def load_predictions(path: str | Path) -> Submission:
    return parse_predictions(read_json(path, PredictionError), file=str(path))


def to_json(submission: dict) -> dict[str, list[dict[str, list]]]:
    """Plain lists everywhere; validates first so a bad grid is never written."""
    parsed = parse_predictions(submission)
    return {tid: [{k: g.tolist() for k, g in e.items()} for e in entries] for tid, entries in parsed.items()}


def write_predictions(path: str | Path, submission: dict) -> None:
    atomic_write_json(path, to_json(submission))
