"""Teacher-matching loss terms: logit distillation, feature distillation, similarity (attention) transfer.

Teacher outputs arrive as LossInputs.teacher = {"features": [B, L, D], "logits"?: [B, 30, 30, V],
"mask"?: [B] bool (rows the teacher has no output for)}. L is 1 (a per-grid vector), K*K (a KxK
spatial map over the canvas) or the teacher's full spatial token grid; the student's 900 cell states
are pooled the same way so both sides describe the same cells.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..arc.task import MAX_SIZE
from ..errors import SageError
from .losses import LossInputs, cell_targets, register


def student_tokens(state: torch.Tensor, length: int) -> torch.Tensor:
    """A readout's state [B, T+900, d] -> its cell states pooled to `length` tokens [B, length, d]."""
    cells = state[:, -MAX_SIZE * MAX_SIZE:]
    if length == 1:
        return cells.mean(dim=1, keepdim=True)
    k = math.isqrt(length)
    if k * k != length:
        raise SageError(f"teacher features have {length} tokens: not 1 and not a square spatial grid")
    if k == MAX_SIZE:
        return cells
    grid = cells.transpose(1, 2).reshape(cells.shape[0], -1, MAX_SIZE, MAX_SIZE)
    return F.adaptive_avg_pool2d(grid, k).flatten(2).transpose(1, 2)


def _teacher(li: LossInputs, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    if li.teacher is None or key not in li.teacher:
        raise SageError(f"this loss needs teacher '{key}', but the batch has none (configure a teacher)")
    value = li.teacher[key]
    mask = li.teacher.get("mask")
    mask = torch.ones(value.shape[0], dtype=torch.bool, device=value.device) if mask is None else mask.bool()
    return value, mask


def _masked_mean(per_row: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(per_row.dtype)
    return (per_row * m).sum() / m.sum().clamp(min=1)


@register("logit")
class LogitLoss(nn.Module):
    """KL(teacher || student) on each cell's colour distribution at temperature T, times T^2 (so the
    gradient scale does not shrink with T), averaged like the task loss: a grid's own cells weigh 1,
    OUTSIDE cells `outside_weight`, each example normalised by its cell count."""

    def __init__(self, temperature: float = 2.0, outside_weight: float = 0.1, last_step_only: bool = False) -> None:
        super().__init__()
        self.t, self.outside_weight, self.last_step_only = temperature, outside_weight, last_step_only

    def forward(self, li: LossInputs) -> torch.Tensor:
        teacher, mask = _teacher(li, "logits")
        if "outputs" in li.batch:
            _, inside = cell_targets(li.batch)
        else:
            inside = torch.ones(teacher.shape[:3], dtype=torch.bool, device=teacher.device)
        weights = torch.where(inside, 1.0, self.outside_weight).flatten(1)
        weights = weights / inside.flatten(1).sum(1, keepdim=True).clamp(min=1)
        target = F.log_softmax(teacher.float() / self.t, dim=-1)
        readouts = li.readouts[-1:] if self.last_step_only else li.readouts
        total = 0.0
        for r in readouts:
            if r.logits.shape[-1] != teacher.shape[-1]:
                raise SageError(f"teacher has {teacher.shape[-1]} classes per cell, student {r.logits.shape[-1]}")
            pred = F.log_softmax(r.logits.float() / self.t, dim=-1)
            kl = F.kl_div(pred, target, log_target=True, reduction="none").sum(-1).flatten(1)
            total = total + _masked_mean((kl * weights).sum(1), mask) * self.t ** 2
        return total / len(readouts)


@register("feature")
class FeatureLoss(nn.Module):
    """mse * MSE + cosine * (1 - cos) between projected student cell states and standardised teacher
    features. The projector is this module's parameter, so it trains with the student.

    Targets are standardised per dimension, by the store's statistics (teacher_mean/teacher_std) or
    by running statistics seeded from the first batch, and every term is a mean, not a sum: the
    original attempt summed raw 2048-dim errors (~9,000 at init) and drowned the task loss."""

    context_keys = ("student_hidden", "teacher_dim", "teacher_mean", "teacher_std")

    def __init__(self, student_hidden: int | None = None, teacher_dim: int | None = None, mse: float = 1.0,
                 cosine: float = 0.5, step: int = -1, momentum: float = 0.01,
                 teacher_mean: torch.Tensor | None = None, teacher_std: torch.Tensor | None = None) -> None:
        super().__init__()
        if student_hidden is None or teacher_dim is None:
            raise SageError("the feature loss needs student_hidden and teacher_dim (pass them to LossSet)")
        self.proj = nn.Linear(student_hidden, teacher_dim)
        self.mse_w, self.cos_w, self.step, self.momentum = mse, cosine, step, momentum
        self.fixed = teacher_mean is not None and teacher_std is not None
        self.register_buffer("mean", torch.zeros(teacher_dim) if teacher_mean is None else teacher_mean.float())
        self.register_buffer("std", torch.ones(teacher_dim) if teacher_std is None else teacher_std.float())
        self.register_buffer("seen", torch.tensor(self.fixed))

    @torch.no_grad()
    def _update(self, t: torch.Tensor) -> None:
        flat = t.flatten(0, -2).float()
        mean, std = flat.mean(0), flat.std(0) if flat.shape[0] > 1 else torch.ones_like(self.std)
        if not bool(self.seen):  # seed from the first batch so the loss is O(1) from step one
            self.mean.copy_(mean)
            self.std.copy_(std)
            self.seen.fill_(True)
        else:
            self.mean.lerp_(mean, self.momentum)
            self.std.lerp_(std, self.momentum)

    def forward(self, li: LossInputs) -> torch.Tensor:
        teacher, mask = _teacher(li, "features")
        teacher = teacher.float()
        if not self.fixed and self.training:
            self._update(teacher[mask])
        target = (teacher - self.mean) / self.std.clamp(min=1e-4)
        pred = self.proj(student_tokens(li.readouts[self.step].state, teacher.shape[1]).float())
        mse = (pred - target).pow(2).mean(dim=(1, 2))
        cos = 1 - F.cosine_similarity(pred, target, dim=-1).mean(1)
        return _masked_mean(self.mse_w * mse + self.cos_w * cos, mask)


@register("attention")
class SimilarityLoss(nn.Module):
    """Attention transfer through token-similarity maps: the cosine-similarity matrix of the
    student's pooled cell states should match the teacher's ([L, L] each; needs L > 1). Needs no
    projector, so it transfers structure (which regions look alike) rather than the features."""

    def __init__(self, grid: int | None = None, step: int = -1) -> None:
        super().__init__()
        self.grid, self.step = grid, step

    @staticmethod
    def _similarity(x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x.float(), dim=-1)
        return x @ x.transpose(1, 2)

    def forward(self, li: LossInputs) -> torch.Tensor:
        teacher, mask = _teacher(li, "features")
        length = teacher.shape[1]
        if length < 2:
            raise SageError("attention transfer needs spatial teacher features (pool none or KxK, not grid)")
        if self.grid and self.grid * self.grid < length:
            side = math.isqrt(length)
            grid = teacher.transpose(1, 2).reshape(teacher.shape[0], -1, side, side).float()
            teacher = F.adaptive_avg_pool2d(grid, self.grid).flatten(2).transpose(1, 2)
            length = self.grid * self.grid
        student = student_tokens(li.readouts[self.step].state, length)
        diff = (self._similarity(student) - self._similarity(teacher)).pow(2).mean(dim=(1, 2))
        return _masked_mean(diff, mask)
