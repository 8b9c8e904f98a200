"""Task codes for the ARC solver: where the per-variant code vectors of a task come from.

A codes provider is any callable `task -> codes [V, code_dim]`. Unseen tasks get codes fitted by
`student.adapt.fit_codes`, the same routine `sage-distill predict` uses; DREAM consolidation calls it
with more steps and, optionally, unfrozen model weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...arc.task import Task
from ...student.adapt import fit_codes
from ...student.checkpoint import TaskCodes
from ...student.modeling_sage import SageModel
from ...training.data import fingerprint

CodesProvider = Callable[[Task], torch.Tensor]


class FittedCodes:
    """Look the task up in the model's code table by fingerprint; otherwise fit codes from its
    demonstrations, starting from the table's mean (or zeros when the model has no table)."""

    def __init__(self, model: SageModel, variants: int, table: TaskCodes | None = None, steps: int = 30,
                 lr: float = 0.05) -> None:
        self.model, self.variants, self.table, self.steps, self.lr = model, variants, table, steps, lr
        self.fitted: dict[str, torch.Tensor] = {}

    def start(self) -> torch.Tensor:
        if self.table is not None and self.table.variants == self.variants:
            return self.table.mean().float()
        return torch.zeros(self.variants, self.model.config.code_dim)

    def __call__(self, task: Task) -> torch.Tensor:
        fp = fingerprint(task)
        if fp in self.fitted:
            return self.fitted[fp]
        if self.table is not None and self.table.variants == self.variants:
            known = self.table.lookup(fp)
            if known is not None:
                return known.float()
        codes, _ = fit_codes(self.model, task, self.start(), self.steps, self.lr)
        self.fitted[fp] = codes
        return codes
