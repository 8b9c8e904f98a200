"""Vision: the SAGE model's shared layers as a plugin that embeds an ARC task for memory and salience.

Step k runs demonstration pair k (its token sequence under the identity view, without any task
embedding, so the embedding depends on the grids alone) through the model's blocks and folds it into
a running mean. The embedding is [mean input-token features, mean output-token features - mean
input-token features], from the final norm's output. Energy = relative change of the running
embedding in the last step: it falls as more pairs agree on what the task does, and the plugin stops
when it stalls or the pairs run out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...arc.augment import IDENTITY
from ...arc.task import Task
from ...student.modeling_sage import SageModel, document_mask
from ...student.sequences import encode_pair
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

    @torch.inference_mode()
    def embed_pair(self, inp: np.ndarray, out: np.ndarray) -> np.ndarray:
        """[mean input features, mean output features - mean input features]: [2 * hidden]."""
        m = self.model
        enc = encode_pair(inp, out, IDENTITY)
        n = len(enc.tokens)
        tokens = torch.from_numpy(enc.tokens)[None].to(self.device)
        pos = torch.from_numpy(enc.pos)[None].to(self.device)
        x = m.tok(tokens) + m.view(torch.zeros_like(tokens))  # no task embedding: the grids alone
        cos, sin = m.rope(pos)
        mask = document_mask(torch.zeros(1, n, dtype=torch.long, device=self.device))
        for _ in range(m.config.loops):
            for block in m.blocks:
                x = block(x, cos, sin, mask)
        feats = m.norm(x)[0].float().cpu().numpy()
        cells = enc.tokens < 10
        part = enc.pos[:, 2]
        a = feats[cells & (part == 0)].mean(0)
        b = feats[cells & (part == 1)].mean(0)
        return np.concatenate([a, b - a])

    def init_state(self, x: Task, ctx: dict[str, Any]) -> VisionState:
        return VisionState(x)

    def step(self, s: VisionState) -> VisionState:
        p = s.task.train[s.k]
        e = self.embed_pair(p.input, p.output)
        mean = e if s.mean is None else s.mean + (e - s.mean) / (s.k + 1)
        change = 1.0 if s.mean is None else float(np.linalg.norm(mean - s.mean) / (np.linalg.norm(mean) + 1e-12))
        return VisionState(s.task, s.k + 1, mean, change)

    def energy(self, s: VisionState) -> float:
        return s.change

    def halt(self, history: History, s: VisionState) -> HaltDecision:
        if s.k >= len(s.task.train):
            return HaltDecision(True, "all pairs seen")
        if len(history) >= 2 and history[-1].energy < self.eps:
            return HaltDecision(True, "converged")
        return HaltDecision(False)

    def context(self, s: VisionState) -> dict[str, Any]:
        if s.mean is None:
            return {}
        return {"embedding": s.mean.astype(np.float32), "embedding_pairs": s.k}
