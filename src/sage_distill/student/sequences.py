"""Grids <-> token sequences. One pair is `<start> input rows <io_sep> output rows <end>`, each row
closed by NEWLINE. Every token carries a 3-D position (row, column, part): cells of row r, column c
sit at (r+1, c+1); a row's newline at (r+1, width+1); <start> and <io_sep> at (0, 0) of their part;
<end> at (height+1, 0). `role` is a colour token's colour before the view's colour permutation
(-1 for special tokens), which indexes the per-task colour-role embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arc.augment import Augmentation
from ..arc.task import MAX_SIZE
from .configuration_sage import END, IO_SEP, NEWLINE, START

MAX_OUTPUT_TOKENS = MAX_SIZE * (MAX_SIZE + 1) + 1  # 30 rows of 30 cells + newline, then <end>


@dataclass
class Encoded:
    tokens: np.ndarray  # [L] int64
    pos: np.ndarray  # [L, 3] int64
    role: np.ndarray  # [L] int64
    output_start: int  # index of <io_sep>: the tokens after it are the output (the loss's targets)


def _grid_tokens(grid: np.ndarray, inverse: np.ndarray, part: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = grid.shape
    tokens = np.full((h, w + 1), NEWLINE, dtype=np.int64)
    tokens[:, :w] = grid
    rows, cols = np.meshgrid(np.arange(1, h + 1), np.arange(1, w + 2), indexing="ij")
    pos = np.stack([rows, cols, np.full_like(rows, part)], -1).reshape(-1, 3)
    role = np.full((h, w + 1), -1, dtype=np.int64)
    role[:, :w] = inverse[grid]
    return tokens.reshape(-1), pos, role.reshape(-1)


def encode_pair(inp: np.ndarray, out: np.ndarray | None, aug: Augmentation) -> Encoded:
    """The sequence of one pair seen under `aug`; with `out` None it stops after <io_sep> (a prompt)."""
    inverse = np.argsort(np.asarray(aug.colors)).astype(np.int64)
    a = aug.apply(inp)
    t_in, p_in, r_in = _grid_tokens(a, inverse, 0)
    toks = [np.array([START]), t_in, np.array([IO_SEP])]
    poss = [np.array([[0, 0, 0]]), p_in, np.array([[0, 0, 1]])]
    roles = [np.array([-1]), r_in, np.array([-1])]
    if out is not None:
        b = aug.apply(out)
        t_out, p_out, r_out = _grid_tokens(b, inverse, 1)
        toks += [t_out, np.array([END])]
        poss += [p_out, np.array([[b.shape[0] + 1, 0, 1]])]
        roles += [r_out, np.array([-1])]
    return Encoded(np.concatenate(toks), np.concatenate(poss).astype(np.int64), np.concatenate(roles),
                   output_start=len(t_in) + 1)


def sequence_length(h_in: np.ndarray, w_in: np.ndarray, h_out: np.ndarray, w_out: np.ndarray) -> np.ndarray:
    return 3 + h_in * (w_in + 1) + h_out * (w_out + 1)


def decode_output(tokens: list[int] | np.ndarray) -> np.ndarray | None:
    """Generated output tokens -> grid, or None when they do not form a rectangular 1..30 grid."""
    rows, row = [], []
    for t in tokens:
        t = int(t)
        if t == END:
            break
        if t == NEWLINE:
            if not row:
                return None
            rows.append(row)
            row = []
        elif 0 <= t < 10:
            row.append(t)
        else:
            return None
    else:
        return None  # never ended
    if row or not rows or len(rows) > MAX_SIZE or len({len(r) for r in rows}) != 1 or len(rows[0]) > MAX_SIZE:
        return None
    return np.array(rows, dtype=np.uint8)
