"""Build a teacher from config, and compute its targets for a training batch (online distillation)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict

from .base import Teacher, TeacherError, parse_pool, pool_tokens

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TeacherConfig(BaseModel):
    """The `teacher:` section of a run config (and the `extract` command's options)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["groot", "hf", "sage"]
    weights: str  # a local folder: GR00T checkpoint, HF model, or SAGE model
    tokenizer: str | None = None  # groot: a local Qwen3 tokenizer folder (required)
    layer: int | None = None  # groot: LM layers run (1..12, default 12); hf: hidden_states index; sage: step
    pool: str = "grid"  # none | grid | KxK
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] | None = None  # default: bf16 on GPU, fp32 on CPU
    steps: int | None = None  # sage: refinement steps to run
    arch: Literal["full", "tiny"] = "full"  # groot: tiny only for tests and smoke runs

    def torch_dtype(self) -> torch.dtype:
        if self.dtype:
            return DTYPES[self.dtype]
        return torch.bfloat16 if self.device.startswith("cuda") else torch.float32


def build_teacher(cfg: TeacherConfig | dict) -> Teacher:
    """A ready, frozen teacher on cfg.device. Raises TeacherError on bad weights or options."""
    teacher = _build(cfg if isinstance(cfg, TeacherConfig) else TeacherConfig.model_validate(cfg))
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
    if cfg.kind == "hf":
        from .hf import HFTeacher

        return HFTeacher(cfg.weights, -1 if cfg.layer is None else cfg.layer, cfg.device, dtype)
    from .sage import SageTeacher

    return SageTeacher(cfg.weights, -1 if cfg.layer is None else cfg.layer, cfg.steps, cfg.device, dtype)


def teacher_targets(teacher: Teacher, batch: dict[str, torch.Tensor], pool: str = "grid",
                    codes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """LossInputs.teacher for a training batch: {"features": [B, L, D] float32, "logits"?: [B,30,30,V]}.

    Reads only batch["inputs"] (the student's [B, 30, 30] input canvases, 10 = outside), so the
    teacher sees exactly what the student sees and never the targets."""
    out = teacher.encode(batch["inputs"], codes=codes)
    targets = {"features": pool_tokens(out["features"], teacher.tokens_hw, pool).float()}
    if "logits" in out:
        targets["logits"] = out["logits"].float()
    return targets
