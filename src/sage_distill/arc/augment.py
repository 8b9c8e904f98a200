"""Exact, invertible augmentations: 8 dihedral transforms and colour permutations. One `Augmentation`
is applied to every grid of a task so the rule survives."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .task import NUM_COLORS

IDENTITY_COLORS = tuple(range(NUM_COLORS))


def dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """k in 0..7: k % 4 quarter-turns counter-clockwise, then a transpose when k >= 4."""
    out = np.rot90(grid, k % 4)
    return np.ascontiguousarray(out.T if k >= 4 else out)


def dihedral_inverse(grid: np.ndarray, k: int) -> np.ndarray:
    out = grid.T if k >= 4 else grid
    return np.ascontiguousarray(np.rot90(out, -(k % 4)))


def random_color_perm(rng: np.random.Generator, keep_background: bool = True,
                      movable: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """A random colour permutation (0 stays background with `keep_background`). With `movable`, only
    those colours are permuted among themselves and every other colour keeps its value: a task's output
    colour that its inputs never show then stays what it is, so it can be known (see `input_palette`)."""
    if movable is None:
        if keep_background:
            return (0, *(int(c) for c in rng.permutation(np.arange(1, NUM_COLORS))))
        return tuple(int(c) for c in rng.permutation(NUM_COLORS))
    moving = [c for c in movable if not (keep_background and c == 0)]
    colours = list(range(NUM_COLORS))
    for c, new in zip(moving, rng.permutation(moving), strict=True):
        colours[c] = int(new)
    return tuple(colours)


def input_palette(train_inputs: list[np.ndarray], test_inputs: list[np.ndarray] | tuple = ()) -> tuple[int, ...]:
    """The colours a task's input grids show (demonstration and test inputs: never an output, so training
    and an answer-free challenges file give the same palette)."""
    return tuple(sorted({int(c) for g in (*train_inputs, *test_inputs) for c in np.unique(g)}))


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

    @staticmethod
    def random(rng: np.random.Generator, keep_background: bool = True) -> Augmentation:
        return Augmentation(int(rng.integers(8)), random_color_perm(rng, keep_background))


IDENTITY = Augmentation()  # the view every grid is seen in unchanged (dihedral 0, colours unmoved)
