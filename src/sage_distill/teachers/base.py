"""What every teacher shares: leak-free inputs, grid rendering, token pooling, the Teacher protocol.

A teacher never sees a task's test output and never its id. `teacher_inputs` is the only way a task
becomes teacher input, and it refuses a task that still carries test outputs: callers must strip
them with `Task.without_answers()` on purpose, so an answer cannot slip in by accident.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from ..arc.task import MAX_SIZE, NUM_COLORS, Task
from ..errors import SageError

OUTSIDE = NUM_COLORS
ContextMode = Literal["none", "demos"]
# The standard ARC palette; OUTSIDE (beyond the grid) is white, a colour no ARC cell has.
PALETTE = np.array([[0, 0, 0], [0, 116, 217], [255, 65, 54], [46, 204, 64], [255, 220, 0],
                    [170, 170, 170], [240, 18, 190], [255, 133, 27], [127, 219, 255], [135, 12, 37],
                    [255, 255, 255]], dtype=np.float32) / 255.0
# A fixed instruction: it names no task and says nothing about any answer.
INSTRUCTION = "These images are grids from a visual reasoning puzzle. Describe the transformation."


class TeacherError(SageError):
    """A teacher cannot be built or run as asked (bad weights, leaking input, ...)."""


@dataclass(frozen=True)
class TeacherInput:
    """One query grid with the demonstration pairs shown before it. Holds no task id."""

    context: tuple[tuple[np.ndarray, np.ndarray], ...]
    query: np.ndarray

    @property
    def key(self) -> str:
        return query_key(self.query, self.context)

    def images(self) -> list[np.ndarray]:
        """Grids in the order a multi-image teacher sees them: demos (input, output), then the query."""
        return [g for pair in self.context for g in pair] + [self.query]


def query_key(query: np.ndarray, context: tuple[tuple[np.ndarray, np.ndarray], ...] = ()) -> str:
    """Store row key: a hash of exactly what the teacher saw (shapes and cells), nothing else."""
    h = hashlib.sha256()
    for g in [g for pair in context for g in pair] + [query]:
        g = np.ascontiguousarray(g, dtype=np.uint8)
        h.update(bytes(g.shape) + g.tobytes())
    return h.hexdigest()[:32]


def batch_keys(inputs: torch.Tensor) -> list[str]:
    """Store keys (context "none") of grids drawn on canvases [B, 30, 30] (10 = outside): each grid
    is cut out of its canvas wherever it sits, so a grid drawn off the corner still finds its row."""
    keys = []
    for canvas in inputs.cpu().numpy():
        rows, cols = np.nonzero(canvas != OUTSIDE)
        grid = canvas[rows.min():rows.max() + 1, cols.min():cols.max() + 1] if rows.size else canvas[:0, :0]
        keys.append(query_key(grid))
    return keys


def teacher_inputs(task: Task, context: ContextMode = "none", max_context: int = 3) -> list[tuple[TeacherInput, str]]:
    """Teacher inputs for every grid the student reads as input (demo inputs, test inputs), each
    with a place label ("train 0", "test 1") for the store's manifest.

    With context "demos", a demo input's own pair is left out of its context: showing it would show
    the teacher the answer to the very example the student is trained on."""
    if task.test_outputs is not None:
        raise TeacherError(f"task {task.id} still carries test outputs; a teacher must never see them. "
                           "Pass task.without_answers().")
    out = []
    pairs = [(p.input, p.output) for p in task.train]
    queries = [(f"train {i}", p.input, i) for i, p in enumerate(task.train)]
    queries += [(f"test {i}", g, None) for i, g in enumerate(task.test_inputs)]
    for place, grid, own in queries:
        ctx = () if context == "none" else tuple(p for j, p in enumerate(pairs) if j != own)[:max_context]
        out.append((TeacherInput(ctx, grid), place))
    return out


def to_canvas(grid: np.ndarray) -> np.ndarray:
    canvas = np.full((MAX_SIZE, MAX_SIZE), OUTSIDE, dtype=np.int64)
    canvas[: grid.shape[0], : grid.shape[1]] = grid
    return canvas


def render_canvases(canvases: torch.Tensor, size: int = 224, mean: float = 0.5, std: float = 0.5) -> torch.Tensor:
    """[N, 30, 30] cell tokens (OUTSIDE = 10) -> normalised images [N, 3, size, size].

    The whole canvas is drawn, not just the grid, so the image's patch grid lines up with the
    student's canvas: a KxK pooling of teacher patches and of student cells covers the same cells.
    Nearest-neighbour upscaling keeps cell edges sharp; runs on the canvases' device."""
    palette = torch.as_tensor(PALETTE, device=canvases.device)
    idx = (torch.arange(size, device=canvases.device) * MAX_SIZE) // size  # pixel -> cell
    cells = canvases.long()[:, idx][:, :, idx]  # [N, size, size]
    img = palette[cells].permute(0, 3, 1, 2)
    return (img - mean) / std


def pool_tokens(tokens: torch.Tensor, hw: tuple[int, int], pool: str) -> torch.Tensor:
    """[B, H*W, D] spatial tokens -> [B, L, D]: "none" keeps all, "grid" is the mean ([B, 1, D]),
    "KxK" (e.g. "4x4") is an adaptive average pool over the token grid ([B, K*K, D])."""
    if pool == "none":
        return tokens
    if pool == "grid":
        return tokens.mean(dim=1, keepdim=True)
    k = parse_pool(pool)
    b, n, d = tokens.shape
    grid = tokens.transpose(1, 2).reshape(b, d, hw[0], hw[1]).float()
    return F.adaptive_avg_pool2d(grid, k).flatten(2).transpose(1, 2).to(tokens.dtype)


def parse_pool(pool: str) -> int:
    """The K of a "KxK" pooling, or 0 for "none"/"grid"; refuses anything else."""
    if pool in ("none", "grid"):
        return 0
    m = re.fullmatch(r"(\d+)x(\d+)", pool)
    if not m or m.group(1) != m.group(2) or not 1 <= int(m.group(1)) <= 30:
        raise TeacherError(f"pooling must be none, grid or KxK with K 1-30 (e.g. 4x4), got '{pool}'", file="--pool")
    return int(m.group(1))


@runtime_checkable
class Teacher(Protocol):
    """A frozen grid teacher (GR00T backbone, Hugging Face vision model). `encode` maps a batch of
    query canvases [B, 30, 30] (and optional demo context) to {"features": [B, H*W, D]}, spatial
    tokens laid out on `tokens_hw`."""

    name: str
    model: torch.nn.Module
    layer: int
    feature_dim: int
    tokens_hw: tuple[int, int]  # the spatial token grid "features" is laid out on

    def encode(self, queries: torch.Tensor, context: list[list[torch.Tensor]] | None = None
               ) -> dict[str, torch.Tensor]: ...


def canvases_of(inputs: list[TeacherInput]) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
    """Stack the query canvases; context grids become canvases too, in showing order."""
    queries = torch.from_numpy(np.stack([to_canvas(t.query) for t in inputs]))
    context = [[torch.from_numpy(to_canvas(g)) for g in t.images()[:-1]] for t in inputs]
    return queries, context
