"""Configuration of the SAGE ARC model, with its size presets.

The model reads one demonstration or test pair as a token sequence
`<start> input rows <io_sep> output rows <end>`, every row closed by a newline token, so the
output's size is generated rather than classified. Vocabulary: colours 0-9, then the four
special tokens below.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

NEWLINE, START, IO_SEP, END = 10, 11, 12, 13
VOCAB = 14
IGNORE = -100  # the label of a token that carries no loss (PyTorch's cross-entropy default)
PresetName = Literal["tiny", "student-tiny", "small", "large"]


class SageConfig(BaseModel):
    """Shape of a SAGE model. `loops` > 1 applies the same `layers` blocks that many times (weights
    shared across refinement steps): the looped variant, compared with plain depth in BENCHMARKS."""

    model_config = ConfigDict(extra="forbid")

    hidden: int = Field(448, ge=16)
    heads: int = Field(7, ge=1)
    layers: int = Field(8, ge=1)
    loops: int = Field(1, ge=1)
    mlp_hidden: int = Field(1216, ge=16)  # SwiGLU width: ~8/3 x hidden, a multiple of 64
    rope_theta: float = Field(100.0, gt=1.0)  # positions are at most 31 per axis
    rope_split: tuple[int, int, int] = (3, 3, 2)  # share of rotary pairs for (row, column, part)
    num_tasks: int = Field(0, ge=0)  # rows of the per-task embedding tables (set by training)
    # Views permute only the colours a task's inputs show (training, adaptation and inference alike), so an
    # output colour the inputs never show keeps its value and can be known. False: all of 1-9 (older models).
    palette_views: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @staticmethod
    def preset(name: PresetName) -> SageConfig:
        return SageConfig(**PRESETS[name])


# "small" (5.99M shared parameters, 3.26x fewer than "large") and "student-tiny" (1.78M) are the
# distilled students of "large" (configs/distill/); "tiny" is for tests.
PRESETS: dict[str, dict] = {
    "tiny": dict(hidden=64, heads=4, layers=2, mlp_hidden=192),
    "student-tiny": dict(hidden=192, heads=3, layers=4, mlp_hidden=512),
    "small": dict(hidden=288, heads=4, layers=6, mlp_hidden=768),
    "large": dict(hidden=448, heads=7, layers=8, mlp_hidden=1216),
}
