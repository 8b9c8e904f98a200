"""Loss terms, each an nn.Module (so a term with parameters, such as a feature projector, is
trained with the student) registered by name and combined with configurable weights.

Every term returns a scalar already normalised to order 1, so that weights mean what they say:
the original attempt summed a feature MSE over 2,048 dims (~9,000) against a cross-entropy of 2.3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..student.modeling_sage import SageReadout


@dataclass
class LossInputs:
    readouts: list[SageReadout]  # one per refinement step
    batch: dict[str, torch.Tensor]  # inputs, outputs [B,30,30], offset [B,2], out_size [B,2], ...
    teacher: dict[str, torch.Tensor] | None = None  # e.g. "features" [B, L, D], "logits" [B,30,30,V]
    cache: dict[str, Any] = field(default_factory=dict)


def cell_targets(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cell targets and a mask of the cells inside the true output grid."""
    targets = batch["outputs"]
    return targets, targets < 10


def step_correct(readout: SageReadout, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B] bool: this step's decoded answer equals the target exactly (cells and size)."""
    targets, inside = cell_targets(batch)
    cells_ok = ((readout.logits.argmax(-1) == targets) | ~inside).flatten(1).all(1)
    size = torch.stack([readout.height_logits.argmax(-1), readout.width_logits.argmax(-1)], 1) + 1
    return cells_ok & (size == batch["out_size"]).all(1)


class TaskLoss(nn.Module):
    """Cross-entropy on every step's answer (deep supervision).

    Background imbalance: cells are averaged per example over the grid's own cells, so a 3x3 answer
    counts as much as a 30x30 one, and OUTSIDE cells (most of the canvas) get `outside_weight`.
    The size heads get their own cross-entropy."""

    def __init__(self, outside_weight: float = 0.2, size_weight: float = 0.5) -> None:
        super().__init__()
        self.outside_weight, self.size_weight = outside_weight, size_weight

    def forward(self, li: LossInputs) -> torch.Tensor:
        targets, inside = cell_targets(li.batch)
        inside = inside.flatten(1).float()
        # Mean over the grid's own cells plus a down-weighted mean over the OUTSIDE cells.
        weights = inside / inside.sum(1, keepdim=True).clamp(min=1)
        weights = weights + self.outside_weight * (1 - inside) / (1 - inside).sum(1, keepdim=True).clamp(min=1)
        h, w = (li.batch["out_size"] - 1).unbind(1)
        total = 0.0
        for r in li.readouts:
            ce = F.cross_entropy(r.logits.flatten(0, 2), targets.flatten(), reduction="none").view_as(weights)
            size = F.cross_entropy(r.height_logits, h) + F.cross_entropy(r.width_logits, w)
            total = total + (ce * weights).sum(1).mean() + self.size_weight * size
        return total / len(li.readouts)


class HaltLoss(nn.Module):
    """The halting head learns P(this step's answer is exactly right): binary cross-entropy."""

    def forward(self, li: LossInputs) -> torch.Tensor:
        total = 0.0
        for r in li.readouts:
            target = step_correct(r, li.batch).float()
            total = total + F.binary_cross_entropy_with_logits(r.halt_logit, target)
        return total / len(li.readouts)


LOSSES: dict[str, type[nn.Module]] = {"task": TaskLoss, "halt": HaltLoss}


def register(name: str):
    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        LOSSES[name] = cls
        return cls
    return wrap


class LossSet(nn.Module):
    """Weighted sum of named terms; returns the total and each term's value for logging."""

    def __init__(self, spec: list[dict[str, Any]], **context: Any) -> None:
        super().__init__()
        self.weights: dict[str, float] = {}
        self.terms = nn.ModuleDict()
        for item in spec:
            item = dict(item)
            name, weight = item.pop("name"), float(item.pop("weight", 1.0))
            if name not in LOSSES:
                raise ValueError(f"unknown loss '{name}'; known: {', '.join(sorted(LOSSES))}")
            cls = LOSSES[name]
            wants = getattr(cls, "context_keys", ())
            self.terms[name] = cls(**item, **{k: context[k] for k in wants if k in context})
            self.weights[name] = weight

    def forward(self, li: LossInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total, parts = 0.0, {}
        for name, term in self.terms.items():
            value = term(li)
            parts[name] = value.detach()
            total = total + self.weights[name] * value
        return total, parts


from . import teacher_losses  # noqa: E402, F401  (registers logit, feature, attention)
