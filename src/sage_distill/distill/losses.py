"""Loss terms, each an nn.Module (so a term with parameters, such as a feature projector, is
trained with the student) registered by name and combined with configurable weights.

The terms are model-agnostic: they read per-token student logits [B, L, V], the labels [B, L]
(`IGNORE` = -100 where a token carries no loss, as `training.data` writes them), optionally the
student's hidden states [B, L, D], and teacher signals. Every term returns a scalar already
normalised to order 1 (a mean, never a sum over dimensions), so that weights mean what they say:
an earlier attempt summed a feature MSE over 2,048 dims (~9,000) against a cross-entropy of 2.3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SageError
from ..training.data import IGNORE


@dataclass
class LossInputs:
    logits: torch.Tensor  # [B, L, V] the student's next-token logits
    labels: torch.Tensor  # [B, L] target token ids; IGNORE where a token carries no loss
    hidden: torch.Tensor | None = None  # [B, L, D] the student's final hidden states (feature matching)
    real: torch.Tensor | None = None  # [B, L] bool: not padding (default: every token)
    # Teacher signals, e.g. "logits" [B, L, V], "features" [B, L, Dt] or [B, 1, Dt],
    # "mask" [B] or [B, L] bool (rows / tokens the teacher has a signal for).
    teacher: dict[str, torch.Tensor] | None = None

    def labelled(self) -> torch.Tensor:
        """[B, L] bool: the tokens that carry a loss."""
        return self.labels != IGNORE


def output_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the labelled (output) tokens, a mean over those tokens: the task loss of
    training, adaptation and distillation alike."""
    return F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=IGNORE)


class TaskLoss(nn.Module):
    """The student's `output_loss` (the training loop's own loss)."""

    def forward(self, li: LossInputs) -> torch.Tensor:
        return output_loss(li.logits, li.labels)


LOSSES: dict[str, type[nn.Module]] = {"task": TaskLoss}


def register(name: str):
    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        LOSSES[name] = cls
        return cls
    return wrap


class LossSet(nn.Module):
    """Weighted sum of named terms; returns the total and each term's value for logging.

    `spec` is a config list, e.g. [{"name": "task"}, {"name": "logit", "weight": 0.5, "temperature": 2}];
    `context` carries what a term needs from the run (e.g. student_hidden, teacher_dim)."""

    def __init__(self, spec: list[dict[str, Any]], **context: Any) -> None:
        super().__init__()
        self.weights: dict[str, float] = {}
        self.terms = nn.ModuleDict()
        for item in spec:
            item = dict(item)
            name, weight = item.pop("name"), float(item.pop("weight", 1.0))
            if name not in LOSSES:
                raise SageError(f"unknown loss '{name}'; known: {', '.join(sorted(LOSSES))}")
            if name in self.terms:
                raise SageError(f"loss '{name}' is listed twice")
            cls = LOSSES[name]
            wants = getattr(cls, "context_keys", ())
            try:
                self.terms[name] = cls(**item, **{k: context[k] for k in wants if k in context})
            except TypeError as e:
                raise SageError(f"bad options for loss '{name}': {e}") from None
            self.weights[name] = weight

    def forward(self, li: LossInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total: torch.Tensor | float = 0.0
        parts = {}
        for name, term in self.terms.items():
            value = term(li)
            parts[name] = value.detach()
            total = total + self.weights[name] * value
        return total, parts  # type: ignore[return-value]


from . import teacher_losses  # noqa: E402, F401  (registers logit, feature)
