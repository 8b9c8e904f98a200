"""A trained SAGE ARC model as the frozen teacher of a smaller one, run online on the student's own
packed training batch: per-token next-token logits and final hidden states (after the last norm).

The teacher sees exactly what the student sees: it reads only the batch's tokens, positions, task
rows, views, colour roles and document ids, never its labels, and the batches themselves hold no
evaluation test output (`training.data` strips those before any pair is taken). Tasks are matched
by fingerprint, never by id: student row i is the teacher's row of the same fingerprint, and a task
the teacher has no embedding for gets the mean of its task embeddings.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..student.checkpoint import load_sage_model
from ..student.modeling_sage import SageModel, packed_mask
from ..teachers.base import TeacherError

log = logging.getLogger(__name__)
READS = ("tokens", "pos", "task", "view", "role", "doc")  # the batch keys the teacher reads; never "labels"


class SageTeacher:
    name = "sage"
    signals = frozenset({"logits", "features"})
    layer = -1  # final hidden states (after the model's last RMSNorm), the head's input

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        model, fingerprints = load_sage_model(folder, str(device), "--weights")
        model.extend_tasks(1)  # one more row, the mean of the trained ones: for tasks the teacher has none for
        self.model: SageModel = model.to(dtype).eval()
        self.model.requires_grad_(False)
        self.fingerprints = list(fingerprints)
        self.rows = {fp: i for i, fp in enumerate(self.fingerprints)}
        self.unseen_row = len(self.fingerprints)  # the appended mean row
        self.feature_dim, self.vocab = model.config.hidden, model.head.out_features
        self.device, self.dtype = torch.device(device), dtype

    def task_rows(self, fingerprints: list[str]) -> torch.Tensor:
        """[N] long: the teacher's embedding row for each student task row (given by its fingerprint)."""
        rows = [self.rows.get(fp, self.unseen_row) for fp in fingerprints]
        unseen = sum(r == self.unseen_row for r in rows)
        if unseen:
            log.warning("the SAGE teacher has no embedding for %d of %d tasks: they get its mean task embedding",
                        unseen, len(rows))
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    @torch.no_grad()  # not inference_mode: targets must stay usable in autograd and in-place ops
    def targets(self, batch: dict[str, torch.Tensor], task_rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """LossInputs.teacher for a packed batch ([B, L] rows, as `training.data.StepBatches` yields):
        {"logits": [B, L, V] float32, "features": [B, L, D] float32}. `task_rows` maps the batch's
        student task rows to the teacher's (see `task_rows`)."""
        missing = [k for k in READS if k not in batch]
        if missing:
            raise TeacherError(f"the SAGE teacher needs packed batch keys {', '.join(missing)}")
        b = {k: batch[k].to(self.device) for k in READS}
        mask = packed_mask(b["doc"])
        logits, hidden = self.model(b["tokens"], b["pos"], task_rows.to(self.device)[b["task"]], b["view"], b["role"],
                                    mask, return_hidden=True)
        return {"logits": logits.float(), "features": hidden.float()}
