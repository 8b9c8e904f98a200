"""Adapting a trained model to tasks it has no embedding for (the unseen protocol, and how a user
solves an ARC Prize hidden test set): fresh embedding rows, started at the mean of the trained
rows, are trained on those tasks' demonstration pairs only (under training's views: dihedral and
palette permutations, `PackedRows`), all tasks batched together, until the time or step budget
runs out. Two modes:

- `rows`: only the new rows learn (Adam, constant lr); the shared weights stay bit-identical.
- `all`: the new rows and every shared weight learn together (test-time training of the whole
  model, as the ARC-AGI-1 leaders do); the shared weights at a lower lr on a warm-up + cosine
  schedule. The caller decides what the changed shared weights are used for (predict: the unknown
  tasks only).

On CUDA the forward and loss run as one compiled graph (flex attention through inductor, not the
eager fallback that materialises the score matrix) on fixed [rows, row_len] batches, so the graph
compiles once; on the CPU everything stays eager."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal

import torch

from ..arc.task import Task
from ..distill.terms import output_loss
from ..student.modeling_sage import SageModel, packed_mask
from .data import PackedRows, StepBatches, build_pairs, pair_lengths
from .loop import LoopSettings, schedule_factor

log = logging.getLogger(__name__)
AdaptMode = Literal["rows", "all"]
# `all`: the shared weights' peak lr, a fifth of pretraining's (configs/arc-unseen.yaml: 1.5e-3): the budget's
# steps move them toward the new tasks' demonstrations without wiping out what pretraining learnt (a guess to be
# checked by the GPU arms, not a tuned value).
SHARED_LR = 3e-4
# `all`: Adam's first moments are noise and a fresh row's gradients are at their largest in the first steps;
# a short linear warm-up keeps those steps from pushing the shared weights far, then cosine decays to 0 at
# the budget's end (by steps or by the clock after the compiling first step), so the last steps settle.
WARMUP_STEPS = 10


def shared_parameters(model: SageModel) -> dict[str, torch.nn.Parameter]:
    """The parameters every task shares (all but the task-embedding table), by name."""
    return {n: p for n, p in model.named_parameters() if not n.startswith("tasks.")}


def adapt_tasks(model: SageModel, tasks: list[Task], first_row: int, minutes: float, max_steps: int | None = None,
                lr: float = 1e-2, seed: int = 0, row_len: int | None = None, rows: int | None = None,
                mode: AdaptMode = "rows", shared_lr: float = SHARED_LR, compiled: bool | None = None,
                workers: int | None = None) -> dict:
    """Train rows first_row.. (one per task, in order), and with mode `all` the shared weights, on the
    tasks' demonstrations. Never reads a test output: only `task.train` enters the pairs. `compiled`:
    None compiles on CUDA only (callers taking one step a call, as the IRP plugin, pass False)."""
    if mode not in ("rows", "all"):
        raise ValueError(f"adapt mode {mode!r}: rows or all")
    start = time.time()
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    compiled = cuda if compiled is None else compiled
    table = build_pairs([(t.without_answers(), False) for t in tasks])
    table.first_row = first_row
    if row_len is None:  # on the CPU a row just long enough for the longest pair keeps each step short
        row_len = 8192 if cuda else max(int(pair_lengths(table).max()), 256)
    packed = PackedRows(table, row_len, seed, model.config.palette_views)
    workers = (4 if cuda else 0) if workers is None else workers  # pack the next rows while the GPU steps
    loader = torch.utils.data.DataLoader(StepBatches(packed, rows or (8 if cuda else 1), 0, 1), batch_size=None,
                                         sampler=range(max_steps or 1 << 40), num_workers=workers, pin_memory=cuda)
    for p in model.parameters():
        p.requires_grad_(mode == "all")
    task_params = list(model.tasks.parameters())
    shared = list(shared_parameters(model).values())
    for p in task_params:
        p.requires_grad_(True)
    # Rows outside first_row.. get zero gradients, so their Adam moments stay zero and they never move.
    if mode == "rows":
        opt = torch.optim.Adam(task_params, lr=lr, betas=(0.9, 0.95), fused=cuda)
        factors = [lambda _e: 1.0]
    else:  # no weight decay: it would pull the shared weights toward zero, not toward the pretrained ones
        opt = torch.optim.AdamW([{"params": task_params, "lr": lr}, {"params": shared, "lr": shared_lr}],
                                betas=(0.9, 0.95), weight_decay=0.0, fused=cuda)
        factors = [lambda _e: 1.0, lambda _e: factor]  # the task rows keep rows' constant lr
    schedule = LoopSettings(out=Path("."), steps=max_steps or 1, warmup=WARMUP_STEPS, schedule="cosine")
    factor = schedule_factor(schedule, 0, 0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, factors)  # reads `factor`, set before each step

    def step_loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            logits = model(batch["tokens"], batch["pos"], batch["task"], batch["view"], batch["role"], batch["mask"])
        return output_loss(logits, batch["labels"])

    # One graph for model + loss; torch.compile wraps the function and leaves `model` itself eager, so the
    # decoding that follows (KV cache, shapes changing every step) never triggers a compile.
    loss_of = torch.compile(step_loss) if compiled else step_loss
    model.train()
    deadline, step, loss = start + minutes * 60, 0, torch.tensor(float("nan"))
    first_done = start  # the schedule's clock starts after the first step, which compiles
    for batch in loader:
        if time.time() >= deadline or (max_steps is not None and step >= max_steps):
            break
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        batch["mask"] = packed_mask(batch["doc"])
        out = loss_of(batch)
        opt.zero_grad(set_to_none=True)
        out.backward()
        if mode == "all":  # as in training: one outlier batch cannot throw the shared weights far
            torch.nn.utils.clip_grad_norm_(shared, 1.0)
        opt.step()
        loss, step = out.detach(), step + 1  # read once at the end: no host sync per step
        if step == 1:
            first_done = time.time()
        if mode == "all":  # the next step's lr, by steps or by the clock, whichever is further on
            by_clock = (time.time() - first_done) / max(deadline - first_done, 1e-9)
            factor = schedule_factor(schedule, step, max(by_clock, step / max_steps if max_steps else 0.0))
        scheduler.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    loss = float(loss)  # waits for the queued steps, so the times below are the GPU's too
    seconds, after_first = time.time() - start, time.time() - first_done
    report = {"tasks": len(tasks), "mode": mode, "steps": step, "last_loss": loss, "minutes": seconds / 60,
              "first_step_s": first_done - start if step else 0.0,  # compile included on CUDA
              "steps_per_s": (step - 1) / after_first if step > 1 and after_first > 0 else 0.0,
              "compiled": compiled, "tokens_per_step": packed.row_len * (rows or (8 if cuda else 1))}
    log.info("adapted %d tasks (%s): %d steps in %.1f min (%.2f steps/s after the first), last loss %.4f",
             len(tasks), mode, step, report["minutes"], report["steps_per_s"], loss)
    return report
