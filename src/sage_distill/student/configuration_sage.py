"""Configuration of the SAGE student, with its size presets."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..arc.task import MAX_SIZE

PresetName = Literal["tiny", "small", "base"]


class SageConfig(BaseModel):
    """Shape of a SAGE student.

    The model reads a 30x30 canvas of cell tokens (colours 0-9 plus OUTSIDE for cells beyond the
    grid), prepends `task_tokens` tokens produced from a per-task code of `code_dim` numbers, and
    refines an answer state for up to `max_steps` steps of `layers_per_step` transformer blocks.
    """

    model_config = ConfigDict(extra="forbid")

    hidden: int = 384
    heads: int = 6
    mlp_ratio: float = 8 / 3  # SwiGLU: same compute as a 4x GELU MLP
    layers_per_step: int = 2
    max_steps: int = 8
    task_tokens: int = 8
    code_dim: int = 128
    canvas: int = MAX_SIZE
    num_colors: int = 10
    dropout: float = 0.0

    @property
    def vocab(self) -> int:
        return self.num_colors + 1  # + OUTSIDE

    @property
    def outside_token(self) -> int:
        return self.num_colors

    @staticmethod
    def preset(name: PresetName) -> SageConfig:
        return SageConfig(**PRESETS[name])


PRESETS: dict[str, dict] = {
    "tiny": dict(hidden=64, heads=4, layers_per_step=2, max_steps=4, task_tokens=4, code_dim=32),
    "small": dict(hidden=384, heads=6, layers_per_step=3, max_steps=8, task_tokens=8, code_dim=128),
    "base": dict(hidden=768, heads=12, layers_per_step=6, max_steps=8, task_tokens=16, code_dim=256),
}
