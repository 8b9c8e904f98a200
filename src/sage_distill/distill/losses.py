"""The loss set of a training run: the config's `losses:` list, e.g.

    losses:
      - {name: task}
      - {name: logit, weight: 0.5, temperature: 2}
      - {name: on_policy, weight: 1.0, divergence: reverse, every: 4, pairs: 64}

built into weighted terms (`terms.py`) whose sum is the loss; every term's value is logged."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import SageError
from .terms import FeatureLoss, LogitLoss, LossInputs, OnPolicyLoss, TaskLoss

LOSSES: dict[str, type[nn.Module]] = {"task": TaskLoss, "logit": LogitLoss, "feature": FeatureLoss,
                                      "on_policy": OnPolicyLoss}


class LossSet(nn.Module):
    """Weighted sum of named terms; returns the total and each term's value for logging.

    `spec` is a config list of {name, weight, ...options}; `context` carries what a term needs from the
    run (student_hidden, teacher_dim, ...)."""

    def __init__(self, spec: list[dict[str, Any]], **context: Any) -> None:
        super().__init__()
        self.weights: dict[str, float] = {}
        self.terms = nn.ModuleDict()
        for i, item in enumerate(spec):
            item = dict(item)
            name, weight = item.pop("name", None), float(item.pop("weight", 1.0))
            if name not in LOSSES:
                raise SageError(f"unknown loss '{name}'; known: {', '.join(sorted(LOSSES))}", where=f"losses.{i}")
            if name in self.terms:
                raise SageError(f"loss '{name}' is listed twice", where=f"losses.{i}")
            cls = LOSSES[name]
            wants = getattr(cls, "context_keys", ())
            try:
                self.terms[name] = cls(**item, **{k: context[k] for k in wants if k in context})
            except TypeError as e:
                raise SageError(f"bad options for loss '{name}': {e}", where=f"losses.{i}") from None
            except SageError as e:
                raise SageError(e.problem, where=f"losses.{i}") from None
            self.weights[name] = weight

    def teacher_signals(self) -> set[str]:
        """What the terms need from a teacher ("logits", "features")."""
        return {k for term in self.terms.values() for k in getattr(term, "needs_teacher", ())}

    @property
    def on_policy(self) -> OnPolicyLoss | None:
        term = self.terms["on_policy"] if "on_policy" in self.terms else None
        return term  # type: ignore[return-value]

    def forward(self, li: LossInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total: torch.Tensor | float = 0.0
        parts = {}
        for name, term in self.terms.items():
            value = term(li)
            parts[name] = value.detach()
            total = total + self.weights[name] * value
        return total, parts  # type: ignore[return-value]
