"""Draft tokens for speculative greedy decoding: a guess of the next few output tokens that the model then
checks in one step (`generate._generate`). A wrong guess costs only compute; the answer is the model's own
greedy one either way.

The guess follows ARC's commonest case, an output that edits its input in place: while the output keeps the
input's width, the cell at (row, column) is guessed to be the input's (under the same view), unless the cell to
its left was changed, whose new colour is then guessed to go on; a row ends where the input's rows end, and the
answer where the input's last row ends. Once the output's first row shows another width, a cell is guessed to
repeat the one above it. On the first 10 ARC-AGI-1 evaluation tasks at 8 views a step with 3 guesses keeps 3.0
tokens per sequence on average (docs/BENCHMARKS.md, "Drafted tokens").
"""

from __future__ import annotations

import numpy as np

from .configuration_sage import END, NEWLINE
from .sequences import MAX_SIZE


def draft(grid: np.ndarray, emitted: np.ndarray, row: int, col: int, width: int, count: int) -> np.ndarray:
    """The `count` tokens guessed to follow `emitted` (the output tokens so far) for the view input `grid`
    [H, W]; (`row`, `col`): where the next token goes (1-based, as `generate.advance` counts); `width`: the
    output's first-row width, 0 while its first row is open."""
    h, w_in = grid.shape
    tokens = emitted[-(MAX_SIZE + 2):].tolist()  # reaches the cell above: a row is at most 31 tokens
    base = len(emitted) - len(tokens)  # the index of tokens[0] in the whole output
    out = np.empty(count, dtype=np.int64)
    for i in range(count):
        wide, same = width or w_in, width in (0, w_in)
        cell = (row <= h and col <= w_in and same)  # the output is the input's size so far: cells pair up
        above = (row - 2) * (width + 1) + col - 1 - base if width and row >= 2 and col <= width else -1
        if col == wide + 1:
            tok = NEWLINE
        elif width == w_in and col == 1 and row == h + 1:
            tok = END
        elif col > 1 and cell and tokens and tokens[-1] != grid[row - 1, col - 2]:
            tok = tokens[-1]  # the cell to the left was changed: the change goes on
        elif cell:
            tok = int(grid[row - 1, col - 1])
        elif 0 <= above < len(tokens):
            tok = tokens[above]  # another size: repeat the cell above
        else:
            tok = tokens[-1] if col > 1 and tokens else 0
        out[i] = tok
        tokens.append(tok)
        if tok == END:
            out[i:] = END
            break
        if tok == NEWLINE:
            width, row, col = width or col - 1, row + 1, 1
        else:
            col += 1
    return out
