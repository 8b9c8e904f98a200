"""The loss terms of training and distillation, each an nn.Module (so a term with parameters, such as
a feature projector, trains with the student). They are model-agnostic: they read per-token student
logits [B, L, V], labels [B, L] (`IGNORE` where a token carries no loss), optionally the student's
hidden states [B, L, D], and teacher signals. Every term returns a scalar of order one (a mean,
never a sum over dimensions), so that weights mean what they say: an earlier attempt summed a
feature MSE over 2,048 dims (~9,000) against a cross-entropy of 2.3.

Teacher signals arrive as LossInputs.teacher:
- "logits" [B, L, V]: the teacher's next-token logits on the very tokens the student reads;
- "features" [B, L, Dt] (per token, e.g. a teacher's hidden states) or [B, 1, Dt] (one vector per
  row, e.g. a pooled vision-teacher feature of the row's grid);
- "mask" [B] or [B, L] bool (optional): rows / tokens the teacher has a signal for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SageError
from ..student.configuration_sage import IGNORE


@dataclass
class LossInputs:
    logits: torch.Tensor  # [B, L, V] the student's next-token logits
    labels: torch.Tensor  # [B, L] target token ids; IGNORE where a token carries no loss
    hidden: torch.Tensor | None = None  # [B, L, D] the student's final hidden states (feature matching)
    real: torch.Tensor | None = None  # [B, L] bool: not padding (default: every token)
    teacher: dict[str, torch.Tensor] | None = None
    # [B, L] the student's own generated tokens as labels (on-policy rows), IGNORE elsewhere
    generated: torch.Tensor | None = None

    def labelled(self) -> torch.Tensor:
        """[B, L] bool: the tokens that carry a loss."""
        return self.labels != IGNORE


def output_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the labelled (output) tokens, a mean over those tokens: the task loss of
    training, adaptation and distillation alike."""
    return F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=IGNORE)


class TaskLoss(nn.Module):
    """The student's `output_loss` on the data's own labels."""

    needs_teacher: tuple[str, ...] = ()

    def forward(self, li: LossInputs) -> torch.Tensor:
        return output_loss(li.logits, li.labels)


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


class LogitLoss(nn.Module):
    """KL(teacher || student) of each labelled token's next-token distribution at temperature T,
    times T^2 (Hinton et al.: the gradients' scale then does not shrink as T grows), averaged over
    the labelled tokens the teacher has logits for."""

    needs_teacher = ("logits",)

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

    needs_teacher = ("features",)
    context_keys = ("student_hidden", "teacher_dim", "teacher_mean", "teacher_std")

    def __init__(self, student_hidden: int | None = None, teacher_dim: int | None = None, mse: float = 1.0,
                 cosine: float = 0.5, tokens: str = "real", momentum: float = 0.01, projector: bool = True,
                 teacher_mean: torch.Tensor | None = None, teacher_std: torch.Tensor | None = None) -> None:
        super().__init__()
        if student_hidden is None or teacher_dim is None:
            raise SageError("the feature loss needs student_hidden and teacher_dim (pass them to LossSet)")
        if tokens not in ("real", "labelled"):
            raise SageError(f"the feature loss's tokens must be real or labelled, got '{tokens}'")
        if not projector and student_hidden != teacher_dim:
            raise SageError(f"without a projector the student's hidden size ({student_hidden}) must equal the "
                            f"teacher's feature size ({teacher_dim}); set projector: true")
        self.proj = nn.Linear(student_hidden, teacher_dim) if projector else nn.Identity()
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


class OnPolicyLoss(nn.Module):
    """On-policy distillation (GKD, Agarwal et al. 2024; MiniLLM, Gu et al. 2024): the student generates
    answers to training inputs, the teacher scores the student's own tokens, and the student moves
    towards the teacher's next-token distribution there. Reads the generated rows only
    (`LossInputs.generated`), at temperature `temperature`:
    - "reverse": KL(student || teacher), mode-seeking (MiniLLM);
    - "forward": KL(teacher || student);
    - "jsd": the generalised Jensen-Shannon divergence of GKD with weight `beta` on the teacher.
    `every`, `pairs` and `sample_temperature` tell the training family how often, on how many training
    pairs, and how (0 = greedy) the student generates; `max_tokens` (optional) limits the pairs to those
    whose answer has at most that many tokens (decoding time grows with the longest answer of a batch)."""

    needs_teacher = ("logits",)

    def __init__(self, divergence: str = "reverse", beta: float = 0.5, temperature: float = 1.0, every: int = 1,
                 pairs: int = 64, sample_temperature: float = 0.0, max_tokens: int | None = None) -> None:
        super().__init__()
        if divergence not in ("reverse", "forward", "jsd"):
            raise SageError(f"divergence must be reverse, forward or jsd, got '{divergence}'")
        if not 0 < beta < 1 or temperature <= 0 or every < 1 or pairs < 1 or sample_temperature < 0:
            raise SageError("need 0 < beta < 1, temperature > 0, every >= 1, pairs >= 1, sample_temperature >= 0")
        if max_tokens is not None and max_tokens < 2:
            raise SageError(f"max_tokens must be at least 2, got {max_tokens}")
        self.max_tokens = max_tokens
        self.divergence, self.beta, self.t = divergence, beta, temperature
        self.every, self.pairs, self.sample_temperature = every, pairs, sample_temperature

    def forward(self, li: LossInputs) -> torch.Tensor:
        if li.generated is None:  # no generated rows this step
            return li.logits.sum() * 0.0
        teacher = _teacher(li, "logits")
        mask = _token_mask(li, li.generated != IGNORE)
        log_s = F.log_softmax(li.logits.float() / self.t, dim=-1)
        log_t = F.log_softmax(teacher.float() / self.t, dim=-1)
        if self.divergence == "reverse":
            div = (log_s.exp() * (log_s - log_t)).sum(-1)
        elif self.divergence == "forward":
            div = (log_t.exp() * (log_t - log_s)).sum(-1)
        else:
            b = self.beta
            log_m = torch.logsumexp(torch.stack([log_t + torch.log(torch.tensor(b)),
                                                 log_s + torch.log(torch.tensor(1 - b))]), dim=0)
            div = b * (log_t.exp() * (log_t - log_m)).sum(-1) + (1 - b) * (log_s.exp() * (log_s - log_m)).sum(-1)
        return _masked_mean(div, mask) * self.t ** 2
