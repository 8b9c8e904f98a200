"""Render a task to PNG with the standard ARC palette: one row per demonstration pair, one row per
test input with its solution and the attempts beside it. Wrong cells of an attempt carry a cross."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..utils.io import atomic_write_bytes
from .task import Task

PALETTE = ["#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
           "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25"]
BACKGROUND = "#F4F4F4"
GRID_LINE = "#555555"
TEXT = "#111111"
GOOD, BAD = "#1E8C3A", "#C0142B"
GAP = 14  # pixels between panels and rows


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


class _Panel:
    """One labelled grid, optionally compared against a truth grid."""

    def __init__(self, label: str, grid: np.ndarray, truth: np.ndarray | None = None) -> None:
        self.grid, self.label, self.color = grid, label, TEXT
        self.wrong: np.ndarray | None = None
        if truth is not None:
            if grid.shape != truth.shape:
                self.label, self.color = f"{label}: wrong shape", BAD
            else:
                self.wrong = grid != truth
                n = int(self.wrong.sum())
                self.label, self.color = (f"{label}: right", GOOD) if n == 0 else (f"{label}: {n} wrong", BAD)
        h, w = grid.shape
        self.label += f"  ({h}x{w})"

    def size(self, cell: int) -> tuple[int, int]:
        h, w = self.grid.shape
        return w * cell + 1, h * cell + 1


def _draw_grid(draw: ImageDraw.ImageDraw, panel: _Panel, x0: int, y0: int, cell: int) -> None:
    h, w = panel.grid.shape
    for r in range(h):
        for c in range(w):
            x, y = x0 + c * cell, y0 + r * cell
            draw.rectangle([x, y, x + cell, y + cell], fill=PALETTE[int(panel.grid[r, c])], outline=GRID_LINE)
            if panel.wrong is not None and panel.wrong[r, c]:
                # A white cross drawn over a black one stays visible on every palette colour.
                m = max(2, cell // 5)
                for width, ink in ((max(3, cell // 6), "#000000"), (max(1, cell // 12), "#FFFFFF")):
                    draw.line([x + m, y + m, x + cell - m, y + cell - m], fill=ink, width=width)
                    draw.line([x + m, y + cell - m, x + cell - m, y + m], fill=ink, width=width)
    border = BAD if panel.color == BAD else GRID_LINE
    draw.rectangle([x0 - 1, y0 - 1, x0 + w * cell + 1, y0 + h * cell + 1], outline=border, width=2)


def task_rows(task: Task, predictions: list[dict[str, np.ndarray]] | None) -> list[tuple[str, list[_Panel]]]:
    rows = [(f"train {i}", [_Panel("input", p.input), _Panel("output", p.output)]) for i, p in enumerate(task.train)]
    for i, grid in enumerate(task.test_inputs):
        truth = task.test_outputs[i] if task.test_outputs is not None else None
        panels = [_Panel("test input", grid)]
        if truth is not None:
            panels.append(_Panel("solution", truth))
        if predictions is not None:
            entry = predictions[i] if i < len(predictions) else {}
            for name in ("attempt_1", "attempt_2"):
                if name in entry:
                    panels.append(_Panel(name.replace("_", " "), entry[name], truth))
            if not entry:
                panels.append(_Panel("no prediction", np.zeros((1, 1), np.uint8)))
                panels[-1].color = BAD
        rows.append((f"test {i}", panels))
    return rows


def render_task(task: Task, predictions: list[dict[str, np.ndarray]] | None = None, cell_size: int = 16,
                title: str | None = None) -> Image.Image:
    """The whole task as one image. `predictions` is the task's submission entries, in test order."""
    if cell_size < 2:
        raise ValueError(f"cell size must be at least 2 pixels, got {cell_size}")
    font_size = 14
    font, title_font = _font(font_size), _font(font_size + 4)
    label_h, row_label_w = font_size + 8, 70
    rows = task_rows(task, predictions)
    row_sizes = []
    for _, panels in rows:
        sizes = [p.size(cell_size) for p in panels]
        # A panel is at least as wide as its label so labels never overlap.
        widths = [max(w, int(font.getlength(p.label)) + 4) for p, (w, _) in zip(panels, sizes, strict=True)]
        row_sizes.append((widths, label_h + max(h for _, h in sizes)))
    width = row_label_w + max(sum(ws) + GAP * (len(ws) - 1) for ws, _ in row_sizes) + 2 * GAP
    header = font_size + 4 + 2 * GAP
    height = header + sum(h + GAP for _, h in row_sizes) + GAP
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    draw.text((GAP, GAP), title or f"task {task.id}", fill=TEXT, font=title_font)
    y = header
    for (row_label, panels), (widths, row_h) in zip(rows, row_sizes, strict=True):
        draw.text((GAP, y + label_h), row_label, fill=TEXT, font=font)
        x = GAP + row_label_w
        for panel, w in zip(panels, widths, strict=True):
            draw.text((x, y), panel.label, fill=panel.color, font=font)
            _draw_grid(draw, panel, x + 1, y + label_h + 1, cell_size)
            x += w + GAP
        y += row_h + GAP
        draw.line([GAP, y - GAP // 2, width - GAP, y - GAP // 2], fill="#CCCCCC")
    return img


def save_task_png(path: str | Path, task: Task, predictions: list[dict[str, np.ndarray]] | None = None,
                  cell_size: int = 16, title: str | None = None) -> None:
    buf = io.BytesIO()
    render_task(task, predictions, cell_size, title).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
