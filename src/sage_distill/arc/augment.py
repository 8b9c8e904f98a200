"""Exact, invertible augmentations: 8 dihedral transforms, colour permutations and placement in
the 30x30 canvas. One `Augmentation` is applied to every grid of a task so the rule survives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .task import MAX_SIZE, NUM_COLORS, Pair, Task

IDENTITY_COLORS = tuple(range(NUM_COLORS))


def dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """k in 0..7: k % 4 quarter-turns counter-clockwise, then a transpose when k >= 4."""
    out = np.rot90(grid, k % 4)
    return np.ascontiguousarray(out.T if k >= 4 else out)


def dihedral_inverse(grid: np.ndarray, k: int) -> np.ndarray:
    out = grid.T if k >= 4 else grid
    return np.ascontiguousarray(np.rot90(out, -(k % 4)))


def random_color_perm(rng: np.random.Generator, keep_background: bool = True) -> tuple[int, ...]:
    if keep_background:
        return (0, *(int(c) for c in rng.permutation(np.arange(1, NUM_COLORS))))
    return tuple(int(c) for c in rng.permutation(NUM_COLORS))


@dataclass(frozen=True)
class Augmentation:
    dihedral: int = 0
    colors: tuple[int, ...] = IDENTITY_COLORS  # colors[c] is the new colour of colour c

    def __post_init__(self) -> None:
        # A non-permutation would silently merge colours and make `invert` wrong.
        if self.dihedral not in range(8):
            raise ValueError(f"dihedral must be 0..7, got {self.dihedral}")
        if sorted(self.colors) != list(range(NUM_COLORS)):
            raise ValueError(f"colors must be a permutation of 0..{NUM_COLORS - 1}, got {self.colors}")

    def apply(self, grid: np.ndarray) -> np.ndarray:
        return dihedral(np.asarray(self.colors, dtype=np.uint8)[grid], self.dihedral)

    def invert(self, grid: np.ndarray) -> np.ndarray:
        inverse = np.argsort(np.asarray(self.colors)).astype(np.uint8)
        return inverse[dihedral_inverse(grid, self.dihedral)]

    def apply_task(self, task: Task) -> Task:
        return _map_task(task, self.apply)

    def invert_task(self, task: Task) -> Task:
        return _map_task(task, self.invert)

    @staticmethod
    def random(rng: np.random.Generator, keep_background: bool = True) -> Augmentation:
        return Augmentation(int(rng.integers(8)), random_color_perm(rng, keep_background))


@dataclass(frozen=True)
class Placement:
    """Top-left offset of a grid inside the 30x30 canvas."""

    row: int = 0
    col: int = 0

    def apply(self, grid: np.ndarray, fill: int) -> np.ndarray:
        h, w = grid.shape
        if self.row + h > MAX_SIZE or self.col + w > MAX_SIZE:
            raise ValueError(f"grid {h}x{w} does not fit at ({self.row}, {self.col}) in {MAX_SIZE}x{MAX_SIZE}")
        canvas = np.full((MAX_SIZE, MAX_SIZE), fill, dtype=np.int64)
        canvas[self.row:self.row + h, self.col:self.col + w] = grid
        return canvas

    def invert(self, canvas: np.ndarray, height: int, width: int) -> np.ndarray:
        return np.ascontiguousarray(canvas[self.row:self.row + height, self.col:self.col + width])

    @staticmethod
    def random(rng: np.random.Generator, max_height: int, max_width: int) -> Placement:
        return Placement(int(rng.integers(MAX_SIZE - max_height + 1)), int(rng.integers(MAX_SIZE - max_width + 1)))

    @staticmethod
    def random_for_task(rng: np.random.Generator, task: Task) -> Placement:
        """One offset at which every grid of the task fits, so the whole task moves together."""
        grids = task.all_grids()
        return Placement.random(rng, max(g.shape[0] for g in grids), max(g.shape[1] for g in grids))


def _map_task(task: Task, fn: Callable[[np.ndarray], np.ndarray]) -> Task:
    train = tuple(Pair(fn(p.input), fn(p.output)) for p in task.train)
    outs = None if task.test_outputs is None else tuple(fn(g) for g in task.test_outputs)
    return Task(task.id, train, tuple(fn(g) for g in task.test_inputs), outs)
