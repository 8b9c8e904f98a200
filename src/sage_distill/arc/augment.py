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

    @staticmethod
    def random(rng: np.random.Generator, keep_background: bool = True) -> Augmentation:
        return Augmentation(int(rng.integers(8)), random_color_perm(rng, keep_background))


IDENTITY = Augmentation()  # the view every grid is seen in unchanged (dihedral 0, colours unmoved)
