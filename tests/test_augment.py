"""Augmentations are exact: every transform has an inverse."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_distill.arc.augment import IDENTITY, Augmentation, dihedral, dihedral_inverse, random_color_perm

SETTINGS = settings(max_examples=200, deadline=None)


@st.composite
def grids(draw: st.DrawFn, max_side: int = 30) -> np.ndarray:
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).integers(0, 10, (h, w)).astype(np.uint8)


perms = st.permutations(list(range(10))).map(tuple)


@SETTINGS
@given(grids(), st.integers(0, 7))
def test_dihedral_inverse(grid: np.ndarray, k: int) -> None:
    out = dihedral(grid, k)
    assert out.shape in (grid.shape, grid.shape[::-1])
    assert np.array_equal(dihedral_inverse(out, k), grid)


@SETTINGS
@given(grids(), st.integers(0, 7), perms)
def test_augmentation_inverse(grid: np.ndarray, k: int, colors: tuple[int, ...]) -> None:
    aug = Augmentation(k, colors)
    assert np.array_equal(aug.invert(aug.apply(grid)), grid)
    assert np.array_equal(IDENTITY.apply(grid), grid) and IDENTITY == Augmentation(0, tuple(range(10)))


def test_dihedral_group_is_the_eight_distinct_symmetries() -> None:
    grid = np.arange(6).reshape(2, 3)
    images = {dihedral(grid, k).tobytes() + bytes(dihedral(grid, k).shape) for k in range(8)}
    assert len(images) == 8
    assert dihedral(grid, 1).tolist() == [[2, 5], [1, 4], [0, 3]]  # one quarter-turn counter-clockwise
    assert dihedral(grid, 4).tolist() == grid.T.tolist()


def test_background_fixed_by_default_and_configurable() -> None:
    rng = np.random.default_rng(0)
    assert all(random_color_perm(rng)[0] == 0 for _ in range(50))
    moved = [random_color_perm(rng, keep_background=False)[0] for _ in range(200)]
    assert any(c != 0 for c in moved)
    assert all(sorted(random_color_perm(rng, keep_background=False)) == list(range(10)) for _ in range(20))


def test_invalid_augmentations_refused() -> None:
    with pytest.raises(ValueError, match="permutation"):
        Augmentation(0, (0, 0, 2, 3, 4, 5, 6, 7, 8, 9))
    with pytest.raises(ValueError, match="0..7"):
        Augmentation(8)


def test_palette_permutations_move_only_the_inputs_colours() -> None:
    from sage_distill.arc.augment import input_palette, random_color_perm

    rng = np.random.default_rng(0)
    old = np.random.default_rng(0)
    # without a palette: the permutation of 1-9 drawn exactly as before (released models keep their views)
    assert random_color_perm(rng) == (0, *(int(c) for c in old.permutation(np.arange(1, 10))))
    moved = set()
    for _ in range(50):
        perm = random_color_perm(rng, movable=(0, 2, 5, 7))
        assert sorted(perm) == list(range(10)) and perm[0] == 0
        assert all(perm[c] == c for c in (1, 3, 4, 6, 8, 9))  # colours the inputs lack stay fixed
        moved |= {c for c in (2, 5, 7) if perm[c] != c}
    assert moved == {2, 5, 7}
    grids = [np.array([[0, 3], [3, 1]]), np.array([[4]])]
    assert input_palette(grids[:1], grids[1:]) == (0, 1, 3, 4)


def test_palette_views_are_distinct_and_bounded() -> None:
    from sage_distill.student.generate import view_augmentations

    fp = "0123456789abcdef0123"
    plain = view_augmentations(fp, 20)
    assert len(plain) == 20 and len(set(plain)) == 20
    views = view_augmentations(fp, 40, palette=(0, 2, 6))
    assert len(views) == 16 == len(set(views))  # 8 dihedral x 2 orders of {2, 6}: no more distinct views exist
    assert all(v.colors[c] == c for v in views for c in (1, 3, 4, 5, 7, 8, 9))
    assert view_augmentations(fp, 4, palette=(0,)) == plain[:4]  # nothing to move: the dihedral views
