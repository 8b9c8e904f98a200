"""A trained SAGE model as the teacher of a smaller SAGE: its reasoning core's state at a chosen step
(the 900 cell positions, a 30x30 grid) and that step's per-cell logits."""

from __future__ import annotations

from pathlib import Path

import torch

from ..student.checkpoint import TaskCodes
from ..utils.loading import load_sage_model
from .base import TeacherError


class SageTeacher:
    """`layer` is the refinement step read (0-based; -1 = the last of `steps`)."""

    name = "sage"

    def __init__(self, folder: str | Path, layer: int = -1, steps: int | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.model, self.codes = load_sage_model(folder, str(device), "--weights")
        self.model.to(dtype)
        cfg = self.model.config
        self.steps = steps or cfg.max_steps
        if not -self.steps <= layer < self.steps:
            raise TeacherError(f"step must be in -{self.steps}..{self.steps - 1}, got {layer}")
        self.layer, self.feature_dim, self.tokens_hw = layer, cfg.hidden, (cfg.canvas, cfg.canvas)
        self.device, self.dtype = torch.device(device), dtype

    def codes_for(self, fingerprints: list[str], variants: list[int]) -> torch.Tensor:
        """The teacher's own task codes for (task fingerprint, augmentation variant) rows; a task it
        never saw gets the mean code, as an unseen task does at prediction time."""
        code_dim = self.model.config.code_dim
        if self.codes is None:
            return torch.zeros(len(fingerprints), code_dim, device=self.device)
        codes: TaskCodes = self.codes
        rows = []
        for fp, v in zip(fingerprints, variants, strict=True):
            table = codes.lookup(fp)
            rows.append((table if table is not None else codes.mean())[v % codes.variants])
        return torch.stack(rows).to(self.device)

    @torch.no_grad()  # not inference_mode: targets must stay usable in autograd and in-place ops
    def encode(self, queries: torch.Tensor, context: list[list[torch.Tensor]] | None = None,
               codes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if context and any(context):
            raise TeacherError("a SAGE teacher reads its task through codes, not context grids")
        if codes is None:
            codes = torch.zeros(queries.shape[0], self.model.config.code_dim, device=self.device)
        readouts = self.model(queries.to(self.device).long(), codes.to(self.device, self.dtype), self.steps)
        r = readouts[self.layer]
        t = self.model.config.task_tokens
        return {"features": r.state[:, t:], "logits": r.logits}
