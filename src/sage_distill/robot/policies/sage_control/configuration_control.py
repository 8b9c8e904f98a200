"""Configuration of the SAGE control policy.

The policy reads the `corner2` image (or, for the CPU smoke test, the 39-d simulator state), the 4-d
proprio state of now and one step ago, and the task's one-hot index, and predicts a chunk of `chunk`
actions. The chunk starts as noise and is refined by `flow_steps` Euler steps of a learned velocity
field (rectified flow, as GR00T's action head does): each Euler step is one IRP refinement step.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ControlConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    obs: Literal["pixels", "state"] = "pixels"
    image_size: int = Field(128, ge=32, le=512)  # square frames; the encoder halves it four times
    channels: tuple[int, int, int, int] = (32, 64, 128, 256)
    proprio_dim: int = Field(4, ge=1, le=1024)
    state_dim: int = Field(39, ge=1, le=4096)
    num_tasks: int = Field(50, ge=1, le=10_000)
    action_dim: int = Field(4, ge=1, le=256)
    chunk: int = Field(16, ge=1, le=256)  # actions predicted per query
    n_action_steps: int = Field(8, ge=1, le=256)  # actions executed before the next query
    width: int = Field(512, ge=16, le=4096)
    depth: int = Field(4, ge=1, le=64)  # residual blocks of the velocity field
    flow_steps: int = Field(8, ge=1, le=64)  # Euler steps at inference (the IRP's refinement steps)

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        if not all(1 <= c <= 1024 for c in v):
            raise ValueError("each of the four channel counts must be 1..1024")
        return v
