"""Validation shared by every loader: JSON objects in, typed Tasks out, or an ArcDataError that
names the file, task, place and problem."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ArcDataError, check_task_id
from .task import MAX_SIZE, NUM_COLORS, Pair, Task


def parse_grid(obj: Any, *, file: str | None, task: str | None, place: str) -> np.ndarray:
    def fail(problem: str, where: str = place) -> ArcDataError:
        return ArcDataError(problem, file=file, task=task, place=where)

    if not isinstance(obj, list):
        raise fail(f"grid must be a list of rows, got {type(obj).__name__}")
    if not obj:
        raise fail("grid is empty (no rows)")
    if len(obj) > MAX_SIZE:
        raise fail(f"grid has {len(obj)} rows, more than {MAX_SIZE}")
    width = None
    for r, row in enumerate(obj):
        if not isinstance(row, list):
            raise fail(f"row is {type(row).__name__}, not a list", f"{place}, row {r}")
        if not row:
            raise fail("row is empty", f"{place}, row {r}")
        if width is None:
            width = len(row)
            if width > MAX_SIZE:
                raise fail(f"grid has {width} columns, more than {MAX_SIZE}", f"{place}, row {r}")
        elif len(row) != width:
            raise fail(f"ragged grid: row has {len(row)} cells, row 0 has {width}", f"{place}, row {r}")
        for c, v in enumerate(row):
            # bool is a subclass of int in Python: refuse it explicitly.
            if isinstance(v, bool) or not isinstance(v, int):
                raise fail(f"cell is {v!r} ({type(v).__name__}), not an integer 0-9",
                           f"{place}, row {r}, column {c}")
            if not 0 <= v < NUM_COLORS:
                raise fail(f"cell is {v}, outside 0-9", f"{place}, row {r}, column {c}")
    return np.array(obj, dtype=np.uint8)


def parse_task(obj: Any, task_id: str, *, file: str | None, require_test_outputs: bool = False,
               allow_test_outputs: bool = True) -> Task:
    """Parse one task object. Test outputs are optional unless `require_test_outputs`."""
    check_task_id(task_id, file=file)
    if not isinstance(obj, dict):
        raise ArcDataError(f"task must be a JSON object, got {type(obj).__name__}", file=file, task=task_id)
    for key in ("train", "test"):
        if key not in obj:
            raise ArcDataError(f"missing '{key}'", file=file, task=task_id)
        if not isinstance(obj[key], list):
            raise ArcDataError(f"'{key}' must be a list, got {type(obj[key]).__name__}", file=file, task=task_id)
    if not obj["train"]:
        raise ArcDataError("'train' is empty: a task needs at least one demonstration pair",
                           file=file, task=task_id)
    if not obj["test"]:
        raise ArcDataError("'test' is empty: a task needs at least one test input", file=file, task=task_id)

    train = []
    for i, pair in enumerate(obj["train"]):
        place = f"train pair {i}"
        if not isinstance(pair, dict):
            raise ArcDataError(f"pair must be an object, got {type(pair).__name__}",
                               file=file, task=task_id, place=place)
        for key in ("input", "output"):
            if key not in pair:
                raise ArcDataError(f"missing '{key}'", file=file, task=task_id, place=place)
        train.append(Pair(parse_grid(pair["input"], file=file, task=task_id, place=f"{place}, input"),
                          parse_grid(pair["output"], file=file, task=task_id, place=f"{place}, output")))

    inputs, outputs = [], []
    for i, pair in enumerate(obj["test"]):
        place = f"test pair {i}"
        if not isinstance(pair, dict):
            raise ArcDataError(f"pair must be an object, got {type(pair).__name__}",
                               file=file, task=task_id, place=place)
        if "input" not in pair:
            raise ArcDataError("missing 'input'", file=file, task=task_id, place=place)
        inputs.append(parse_grid(pair["input"], file=file, task=task_id, place=f"{place}, input"))
        if "output" in pair and allow_test_outputs:
            outputs.append(parse_grid(pair["output"], file=file, task=task_id, place=f"{place}, output"))
    if outputs and len(outputs) != len(inputs):
        raise ArcDataError(f"{len(outputs)} of {len(inputs)} test pairs have an 'output': all or none",
                           file=file, task=task_id)
    if require_test_outputs and not outputs:
        raise ArcDataError("test outputs are required here but missing", file=file, task=task_id)
    return Task(task_id, tuple(train), tuple(inputs), tuple(outputs) if outputs else None)
