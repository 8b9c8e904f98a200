"""Adapting a trained model to tasks it has no embedding for (the unseen protocol, and how a user
solves an ARC Prize hidden test set): fresh embedding rows, started at the mean of the trained
rows, are trained on those tasks' demonstration pairs only, all tasks batched together, with the
shared weights frozen, until the time or step budget runs out."""

from __future__ import annotations

import logging
import time

import torch

from ..arc.task import Task
from ..distill.terms import output_loss
from ..student.modeling_sage import SageModel, packed_mask
from .data import PackedRows, StepBatches, build_pairs, pair_lengths

log = logging.getLogger(__name__)


def adapt_tasks(model: SageModel, tasks: list[Task], first_row: int, minutes: float, max_steps: int | None = None,
                lr: float = 1e-2, seed: int = 0, row_len: int | None = None, rows: int | None = None) -> dict:
    """Train rows first_row.. (one per task, in order) on the tasks' demonstrations. Never reads a
    test output: only `task.train` enters the pairs."""
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    table = build_pairs([(t.without_answers(), False) for t in tasks])
    table.task_index = table.task_index + first_row
    if row_len is None:  # on the CPU a row just long enough for the longest pair keeps each step short
        row_len = 8192 if cuda else max(int(pair_lengths(table).max()), 256)
    packed = PackedRows(table, row_len, seed, model.config.palette_views)
    batches = StepBatches(packed, rows or (8 if cuda else 1), 0, 1)
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.tasks.parameters())
    for p in params:
        p.requires_grad_(True)
    # Rows outside first_row.. get zero gradients, so their Adam moments stay zero and they never move.
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.95), fused=cuda)
    model.train()
    deadline, step, loss = time.time() + minutes * 60, 0, float("nan")
    while time.time() < deadline and (max_steps is None or step < max_steps):
        batch = {k: v.to(device) for k, v in batches[step].items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            logits = model(batch["tokens"], batch["pos"], batch["task"], batch["view"], batch["role"],
                           packed_mask(batch["doc"]))
        out = output_loss(logits, batch["labels"])
        opt.zero_grad(set_to_none=True)
        out.backward()
        opt.step()
        loss, step = float(out.detach()), step + 1
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    log.info("adapted %d tasks: %d steps, last loss %.4f", len(tasks), step, loss)
    return {"tasks": len(tasks), "steps": step, "last_loss": loss}
