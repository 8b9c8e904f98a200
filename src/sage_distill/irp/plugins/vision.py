"""Vision: the student's grid encoder as a plugin that embeds an ARC task for memory and salience.

Step k encodes demonstration pair k (input and output canvases, with a zero task code so the
embedding depends on the grids alone) and folds it into a running mean. The embedding is
[mean input features, mean (output - input) features], pooled over each grid's own cells.
Energy = relative change of the running embedding in the last step: it falls as more pairs agree
on what the task does, and the plugin stops when it stalls or the pairs run out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...arc.task import Task
from ...student.modeling_sage import SageModel
from ...training.data import to_canvas
from ..contract import HaltDecision, History


@dataclass
class VisionState:
    task: Task
    k: int = 0  # pairs folded in
    mean: np.ndarray | None = None
    change: float = 1.0


class Vision:
    name = "vision"
    role = "perception"

    def __init__(self, model: SageModel, eps: float = 0.02) -> None:
        self.model, self.eps = model, eps
        self.device = next(model.parameters()).device
        self._left = 0  # pairs not yet folded in, for `halt` (which sees only the history)

    @torch.inference_mode()
    def pooled(self, grids: list[np.ndarray]) -> np.ndarray:
        """Mean encoder features over each grid's own cells: [len(grids), hidden]."""
        tokens = torch.from_numpy(np.stack([to_canvas(g) for g in grids])).long().to(self.device)
        codes = torch.zeros(len(grids), self.model.config.code_dim, device=self.device)
        t = self.model.config.task_tokens
        feats = self.model.encode(tokens, codes)[:, t:]  # [B, 900, d]
        inside = (tokens < 10).flatten(1).unsqueeze(-1).float()
        return ((feats * inside).sum(1) / inside.sum(1)).float().cpu().numpy()

    def embed_pair(self, inp: np.ndarray, out: np.ndarray) -> np.ndarray:
        a, b = self.pooled([inp, out])
        return np.concatenate([a, b - a])

    def init_state(self, x: Task, ctx: dict[str, Any]) -> VisionState:
        self._left = len(x.train)
        return VisionState(x)

    def step(self, s: VisionState) -> VisionState:
        p = s.task.train[s.k]
        e = self.embed_pair(p.input, p.output)
        mean = e if s.mean is None else s.mean + (e - s.mean) / (s.k + 1)
        change = 1.0 if s.mean is None else float(np.linalg.norm(mean - s.mean) / (np.linalg.norm(mean) + 1e-12))
        self._left = len(s.task.train) - s.k - 1
        return VisionState(s.task, s.k + 1, mean, change)

    def energy(self, s: VisionState) -> float:
        return s.change

    def halt(self, history: History) -> HaltDecision:
        if self._left <= 0:
            return HaltDecision(True, "all pairs seen")
        if len(history) >= 2 and history[-1].energy < self.eps:
            return HaltDecision(True, "converged")
        return HaltDecision(False)

    def context(self, s: VisionState) -> dict[str, Any]:
        if s.mean is None:
            return {}
        return {"embedding": s.mean.astype(np.float32), "embedding_pairs": s.k}
