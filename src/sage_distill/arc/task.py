"""The typed ARC task: demonstration pairs, test inputs, and test outputs kept apart.

Grids are numpy uint8 arrays of shape (height, width), 1..30 each side, values 0..9."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

MAX_SIZE = 30
NUM_COLORS = 10


@dataclass(frozen=True)
class Pair:
    input: np.ndarray
    output: np.ndarray


@dataclass(frozen=True)
class Task:
    """One ARC task. `test_outputs` is None whenever the source had no answers (a challenges file):
    predictors receive tasks built from challenges only, so they cannot read an answer by mistake."""

    id: str
    train: tuple[Pair, ...]
    test_inputs: tuple[np.ndarray, ...]
    test_outputs: tuple[np.ndarray, ...] | None = field(default=None, repr=False)

    def without_answers(self) -> Task:
        return Task(self.id, self.train, self.test_inputs, None)

    @property
    def has_answers(self) -> bool:
        return self.test_outputs is not None

    def to_json(self, with_answers: bool = True) -> dict:
        test = []
        for i, grid in enumerate(self.test_inputs):
            entry = {"input": grid.tolist()}
            if with_answers and self.test_outputs is not None:
                entry["output"] = self.test_outputs[i].tolist()
            test.append(entry)
        return {"train": [{"input": p.input.tolist(), "output": p.output.tolist()} for p in self.train],
                "test": test}

    def all_grids(self) -> list[np.ndarray]:
        grids = [g for p in self.train for g in (p.input, p.output)] + list(self.test_inputs)
        return grids + list(self.test_outputs or ())


def grid_key(grid: np.ndarray) -> bytes:
    """A hashable identity for a grid (shape plus cells), used for decontamination."""
    return bytes([grid.shape[0], grid.shape[1]]) + np.ascontiguousarray(grid, dtype=np.uint8).tobytes()


def fingerprint(task: Task) -> str:
    """Identity of a task from its demonstration pairs only (never its id, never test outputs): how
    training, a teacher and a predictor reading an answer-free challenges file find the same row."""
    demos = [[p.input.tolist(), p.output.tolist()] for p in task.train]
    return hashlib.sha256(json.dumps(demos, separators=(",", ":")).encode()).hexdigest()[:24]
