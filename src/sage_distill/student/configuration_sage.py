"""Configuration of the SAGE ARC model, with its size presets.

The model reads one demonstration or test pair as a token sequence
`<start> input rows <io_sep> output rows <end>`, every row closed by a newline token, so the
output's size is generated rather than classified. Vocabulary: colours 0-9, then the four
special tokens below.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

NEWLINE, START, IO_SEP, END = 10, 11, 12, 13
VOCAB = 14
IGNORE = -100  # the label of a token that carries no loss (PyTorch's cross-entropy default)
PresetName = Literal["tiny", "student-tiny", "small", "small-fast", "large"]


class SageConfig(BaseModel):
    """Shape of a SAGE model. `loops` > 1 applies the same `layers` blocks that many times (weights
    shared across refinement steps): the looped variant, compared with plain depth in BENCHMARKS."""

    model_config = ConfigDict(extra="forbid")

    # Upper bounds: far above any model this project trains (large: 448 x 8, 909 tasks), low enough that
    # a config.json cannot ask for gigabytes before its weights are read (checkpoint.load_model).
    hidden: int = Field(448, ge=16, le=8192)
    heads: int = Field(7, ge=1, le=128)
    layers: int = Field(8, ge=1, le=128)
    loops: int = Field(1, ge=1, le=64)
    mlp_hidden: int = Field(1216, ge=16, le=65536)  # SwiGLU width: ~8/3 x hidden, a multiple of 64
    rope_theta: float = Field(100.0, gt=1.0, le=1e9)  # positions are at most 31 per axis
    rope_split: tuple[int, int, int] = (3, 3, 2)  # share of rotary pairs for (row, column, part)
    num_tasks: int = Field(0, ge=0, le=200_000)  # rows of the per-task embedding tables (set by training)
    # Views permute only the colours a task's inputs show (training, adaptation and inference alike), so an
    # output colour the inputs never show keeps its value and can be known. False: all of 1-9 (older models).
    palette_views: bool = False

    @model_validator(mode="after")
    def _shapes(self) -> SageConfig:
        # Rotary embedding rotates half of each head against the other half: the head width must be even.
        if self.head_dim < 2 or self.head_dim % 2:
            raise ValueError(f"hidden // heads must be an even number >= 2, got {self.hidden} // {self.heads}")
        if min(self.rope_split) < 0 or sum(self.rope_split) < 1:
            raise ValueError(f"rope_split must be 3 counts >= 0 with a positive sum, got {list(self.rope_split)}")
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @staticmethod
    def preset(name: PresetName) -> SageConfig:
        return SageConfig(**PRESETS[name])


# "small" (5.99M shared parameters, 3.26x fewer than "large"), "small-fast" (5.59M, 3.49x fewer) and
# "student-tiny" (1.78M) are the distilled students of "large" (configs/distill/); "tiny" is for tests.
# "small-fast" trades depth for width: a CPU decoding step reads every layer's keys and values, so its
# cost follows layers x hidden (6 x 288 is only 2.1x below 8 x 448; 4 x 320 is 2.8x), and prefill follows
# the parameter count. Heads of 64, as the teacher's.
PRESETS: dict[str, dict] = {
    "tiny": dict(hidden=64, heads=4, layers=2, mlp_hidden=192),
    "student-tiny": dict(hidden=192, heads=3, layers=4, mlp_hidden=512),
    "small": dict(hidden=288, heads=4, layers=6, mlp_hidden=768),
    "small-fast": dict(hidden=320, heads=5, layers=4, mlp_hidden=1024),
    "large": dict(hidden=448, heads=7, layers=8, mlp_hidden=1216),
}
