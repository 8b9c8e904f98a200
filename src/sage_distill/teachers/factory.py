"""Build a grid teacher (GR00T, any local Hugging Face vision model) from config, and compute its targets
for a batch of grids. The SAGE teacher reads the student's packed training rows instead and lives with
distillation (`distill.sage_teacher`), after the student model it runs."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from ..utils.config import validation_error
from .base import Teacher, TeacherError, parse_pool, pool_tokens, to_canvas

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TeacherConfig(BaseModel):
    """The `teacher:` section of a run config (and the `extract` command's options)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["groot", "hf"]
    weights: str  # a local folder: GR00T checkpoint or HF model
    tokenizer: str | None = None  # groot: a local Qwen3 tokenizer folder (required)
    layer: int | None = None  # groot: LM layers run (1..12, default 12); hf: hidden_states index
    pool: str = "grid"  # groot, hf: none | grid | KxK
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] | None = None  # default: bf16 on GPU, fp32 on CPU
    arch: Literal["full", "tiny"] = "full"  # groot: tiny only for tests and smoke runs

    def torch_dtype(self) -> torch.dtype:
        if self.dtype:
            return DTYPES[self.dtype]
        return torch.bfloat16 if self.device.startswith("cuda") else torch.float32


def build_teacher(cfg: TeacherConfig | dict) -> Teacher:
    """A ready, frozen teacher on cfg.device. Raises TeacherError on bad weights or options."""
    if not isinstance(cfg, TeacherConfig):
        try:
            cfg = TeacherConfig.model_validate(cfg)
        except ValidationError as e:
            raise validation_error(e, "teacher") from None
    teacher = _build(cfg)
    teacher.model.requires_grad_(False)  # frozen even if its parameters end up near an optimiser
    return teacher


def _build(cfg: TeacherConfig) -> Teacher:
    parse_pool(cfg.pool)
    dtype = cfg.torch_dtype()
    if cfg.kind == "groot":
        from .groot import GrootArch, GrootTeacher, load_qwen_tokenizer
        from .groot_checkpoint import load_groot

        if not cfg.tokenizer:
            raise TeacherError("the groot teacher needs --tokenizer: a local Qwen3 tokenizer folder")
        arch = GrootArch.tiny() if cfg.arch == "tiny" else GrootArch.full()
        model, _ = load_groot(cfg.weights, arch, device=cfg.device)
        return GrootTeacher(model, load_qwen_tokenizer(cfg.tokenizer), cfg.layer, cfg.device, dtype)
    from .hf import HFTeacher

    return HFTeacher(cfg.weights, -1 if cfg.layer is None else cfg.layer, cfg.device, dtype)


def teacher_targets(teacher: Teacher, grids: torch.Tensor | list[np.ndarray], pool: str = "grid"
                    ) -> dict[str, torch.Tensor]:
    """LossInputs.teacher for a batch of grids seen by a grid teacher (GR00T, Hugging Face):
    {"features": [B, L, D] float32} with L = 1 ("grid"), K*K ("KxK") or the teacher's whole token
    grid ("none"). `grids` are [B, 30, 30] canvases (10 = outside) or a list of grids; pass only
    grids the student reads as input, never a test output."""
    if not hasattr(teacher, "encode"):
        raise TeacherError(f"the {teacher.name} teacher does not read grids: use its targets() on a packed batch")
    if not isinstance(grids, torch.Tensor):
        grids = torch.from_numpy(np.stack([to_canvas(np.asarray(g)) for g in grids]))
    out = teacher.encode(grids)
    return {"features": pool_tokens(out["features"], teacher.tokens_hw, pool).float()}
