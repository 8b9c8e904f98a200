"""Rendering: palette colours land in the right cells, wrong cells are crossed, size follows cell size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageColor

from sage_distill.arc.render import PALETTE, render_task, save_task_png
from sage_distill.arc.task import Pair, Task

STANDARD = ["#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
            "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25"]


def _task(with_answer: bool = True) -> Task:
    grid = np.arange(10, dtype=np.uint8).reshape(2, 5)
    answer = (grid[::-1].copy(),) if with_answer else None
    return Task("t1", (Pair(grid, grid[::-1].copy()),), (grid,), answer)


def _colors(img: Image.Image) -> set[tuple[int, int, int]]:
    return {c for _, c in img.getcolors(maxcolors=1 << 20)}


def test_standard_palette() -> None:
    assert [c.upper() for c in PALETTE] == STANDARD


def test_every_palette_colour_drawn() -> None:
    img = render_task(_task(), cell_size=12)
    assert _colors(img) >= {ImageColor.getrgb(c) for c in STANDARD}


def test_cell_size_scales_the_image() -> None:
    small, big = render_task(_task(), cell_size=8), render_task(_task(), cell_size=32)
    assert big.height > small.height and big.width > small.width
    # Three grids of height 2 are stacked (train in/out side by side, test input, solution): 2 rows of cells
    # each in the train row and the test row, so height grows by 2 * 2 * (32 - 8) = 96 pixels.
    assert big.height - small.height == 96
    with pytest.raises(ValueError, match="cell size"):
        render_task(_task(), cell_size=1)


def test_wrong_cells_are_marked() -> None:
    task = _task()
    right = task.test_outputs[0]
    wrong = right.copy()
    wrong[0, 0] = 3  # one wrong cell
    exact = render_task(task, [{"attempt_1": right}], cell_size=20)
    marked = render_task(task, [{"attempt_1": wrong}], cell_size=20)
    # A cross uses white, which no palette colour is: the attempt's grid gains white pixels.
    assert (255, 255, 255) in _colors(marked) and (255, 255, 255) not in _colors(exact)
    wrong[1, 4] = 0  # a second wrong cell: a second, identical cross
    twice = render_task(task, [{"attempt_1": wrong}], cell_size=20)
    assert _white(twice) == 2 * _white(marked)


def _white(img: Image.Image) -> int:
    return int(np.all(np.asarray(img) == 255, axis=-1).sum())


def test_predictions_without_solution_and_wrong_shape() -> None:
    task = _task(with_answer=False)
    img = render_task(task, [{"attempt_1": np.zeros((3, 3), np.uint8), "attempt_2": np.ones((1, 1), np.uint8)}])
    assert img.width > render_task(task).width  # the two attempts are drawn beside the test input
    shaped = render_task(_task(), [{"attempt_1": np.zeros((3, 3), np.uint8)}])
    assert (255, 255, 255) not in _colors(shaped)  # a wrong shape is labelled, not crossed cell by cell


def test_save_png(tmp_path) -> None:
    path = tmp_path / "out" / "t.png"
    save_task_png(path, _task(), cell_size=10)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 100
