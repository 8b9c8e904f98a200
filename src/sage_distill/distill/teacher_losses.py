"""Teacher-matching loss terms: temperature-scaled logit distillation and normalised feature matching.

Teacher signals arrive as LossInputs.teacher:
- "logits" [B, L, V]: the teacher's next-token logits on the very tokens the student reads;
- "features" [B, L, Dt] (per token, e.g. a teacher's hidden states) or [B, 1, Dt] (one vector per
  row, e.g. a pooled vision-teacher feature of the row's grid);
- "mask" [B] or [B, L] bool (optional): rows / tokens the teacher has a signal for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SageError
from .losses import LossInputs, register


def _teacher(li: LossInputs, key: str) -> torch.Tensor:
    if li.teacher is None or key not in li.teacher:
        raise SageError(f"this loss needs teacher '{key}', but the batch has none (configure a teacher)")
    return li.teacher[key]


def _token_mask(li: LossInputs, base: torch.Tensor) -> torch.Tensor:
    """`base` [B, L] bool, narrowed by the teacher's mask (per row [B] or per token [B, L])."""
    mask = (li.teacher or {}).get("mask")
    if mask is None:
        return base
    mask = mask.bool().to(base.device)
    mask = mask[:, None] if mask.ndim == 1 else mask
    if mask.shape[0] != base.shape[0] or mask.shape[1] not in (1, base.shape[1]):
        raise SageError(f"teacher mask {list(mask.shape)} fits neither rows nor tokens {list(base.shape)}")
    return base & mask


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1)


@register("logit")
class LogitLoss(nn.Module):
    """KL(teacher || student) of each labelled token's next-token distribution at temperature T,
    times T^2 (Hinton et al.: the gradients' scale then does not shrink as T grows), averaged over
    the labelled tokens the teacher has logits for."""

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise SageError(f"temperature must be > 0, got {temperature}")
        self.t = temperature

    def forward(self, li: LossInputs) -> torch.Tensor:
        teacher = _teacher(li, "logits")
        if teacher.shape != li.logits.shape:
            raise SageError(f"teacher logits {list(teacher.shape)} do not match the student's "
                            f"{list(li.logits.shape)} (same tokens, same vocabulary needed)")
        target = F.log_softmax(teacher.float() / self.t, dim=-1)
        pred = F.log_softmax(li.logits.float() / self.t, dim=-1)
        kl = F.kl_div(pred, target, log_target=True, reduction="none").sum(-1)  # [B, L]
        return _masked_mean(kl, _token_mask(li, li.labelled())) * self.t ** 2


@register("feature")
class FeatureLoss(nn.Module):
    """mse * MSE + cosine * (1 - cos) between projected student hidden states and standardised
    teacher features. The projector (student_hidden -> teacher_dim) is this module's parameter, so
    it trains with the student.

    Per-token teacher features ([B, L, Dt]) are matched token by token; one vector per row
    ([B, 1, Dt]) is matched by the mean of the row's selected student states. `tokens` selects
    "real" (every non-padding token) or "labelled" (the tokens the task loss reads).

    Targets are standardised per dimension, by given statistics (teacher_mean/teacher_std, e.g. a
    feature store's) or by running statistics seeded from the first batch, and every term is a
    mean, not a sum, so the loss is of order one from the first step whatever the teacher's scale."""

    context_keys = ("student_hidden", "teacher_dim", "teacher_mean", "teacher_std")

    def __init__(self, student_hidden: int | None = None, teacher_dim: int | None = None, mse: float = 1.0,
                 cosine: float = 0.5, tokens: str = "real", momentum: float = 0.01,
                 teacher_mean: torch.Tensor | None = None, teacher_std: torch.Tensor | None = None) -> None:
        super().__init__()
        if student_hidden is None or teacher_dim is None:
            raise SageError("the feature loss needs student_hidden and teacher_dim (pass them to LossSet)")
        if tokens not in ("real", "labelled"):
            raise SageError(f"the feature loss's tokens must be real or labelled, got '{tokens}'")
        self.proj = nn.Linear(student_hidden, teacher_dim)
        self.mse_w, self.cos_w, self.tokens, self.momentum = mse, cosine, tokens, momentum
        self.fixed = teacher_mean is not None and teacher_std is not None
        self.register_buffer("mean", torch.zeros(teacher_dim) if teacher_mean is None else teacher_mean.float())
        self.register_buffer("std", torch.ones(teacher_dim) if teacher_std is None else teacher_std.float())
        self.register_buffer("seen", torch.tensor(self.fixed))

    @torch.no_grad()
    def _update(self, flat: torch.Tensor) -> None:
        if flat.shape[0] < 2:
            return
        mean, std = flat.mean(0), flat.std(0)
        if not bool(self.seen):  # seed from the first batch so the loss is O(1) from step one
            self.mean.copy_(mean)
            self.std.copy_(std)
            self.seen.fill_(True)
        else:
            self.mean.lerp_(mean, self.momentum)
            self.std.lerp_(std, self.momentum)

    def forward(self, li: LossInputs) -> torch.Tensor:
        if li.hidden is None:
            raise SageError("the feature loss needs the student's hidden states (LossInputs.hidden)")
        teacher = _teacher(li, "features").float()
        base = li.labelled() if self.tokens == "labelled" else (
            torch.ones_like(li.labels, dtype=torch.bool) if li.real is None else li.real.bool())
        student = li.hidden.float()
        if teacher.shape[1] == 1:  # one vector per row: compare with the row's mean selected state
            m = base.to(student.dtype).unsqueeze(-1)
            student = (student * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)
            base = base.any(1, keepdim=True)
        elif teacher.shape[:2] != student.shape[:2]:
            raise SageError(f"teacher features {list(teacher.shape)} do not line up with the student's hidden "
                            f"states {list(student.shape)}: need one vector per token or one per row")
        mask = _token_mask(li, base)
        if not self.fixed and self.training:
            self._update(teacher[mask])
        target = (teacher - self.mean) / self.std.clamp(min=1e-4)
        pred = self.proj(student)
        mse = (pred - target).pow(2).mean(-1)
        cos = 1 - F.cosine_similarity(pred, target, dim=-1)
        return _masked_mean(self.mse_w * mse + self.cos_w * cos, mask)
