"""Training data for the student: which tasks, which pairs, which augmentations.

Rules that keep evaluation honest:
- A run declares the evaluation sets it will be scored on. Every training task that shares an id,
  or any grid with a test input or test output of those sets, is dropped and logged
  (ARC-AGI-2's training set holds 376 of ARC-AGI-1's evaluation tasks).
- From evaluation tasks only the demonstration pairs are used (transductive, as TRM and HRM do);
  their test outputs never enter a batch: the tasks are stripped with `without_answers()` first.

Each task gets `variants` fixed augmentations (variant 0 is the identity); each (task, variant)
owns one row of the task-code table. The augmentations are derived from the task's demonstration
pairs alone, so a predictor reading a challenges file derives the very same ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..arc.augment import Augmentation, random_color_perm
from ..arc.datasets import load_dataset
from ..arc.task import MAX_SIZE, NUM_COLORS, Task, grid_key

log = logging.getLogger(__name__)
OUTSIDE = NUM_COLORS  # token for cells beyond the grid


def fingerprint(task: Task) -> str:
    """Identity of a task from its demonstration pairs only (never its id, never test outputs)."""
    demos = [[p.input.tolist(), p.output.tolist()] for p in task.train]
    return hashlib.sha256(json.dumps(demos, separators=(",", ":")).encode()).hexdigest()[:24]


def variant_augmentations(task: Task, variants: int, keep_background: bool = True) -> list[Augmentation]:
    """Variant 0 is the identity; then the dihedral transforms cycle, each with a colour permutation
    drawn from a generator seeded by the task's fingerprint."""
    rng = np.random.default_rng(int(fingerprint(task)[:15], 16))
    augs = [Augmentation()]
    for v in range(1, variants):
        augs.append(Augmentation(v % 8, random_color_perm(rng, keep_background)))
    return augs


@dataclass
class Decontamination:
    dropped: dict[str, str]  # task id -> reason

    def summary(self) -> str:
        by_id = sum(1 for r in self.dropped.values() if r.startswith("id"))
        return f"dropped {len(self.dropped)} training tasks ({by_id} by id, {len(self.dropped) - by_id} by shared grid)"


def decontaminate(train: list[Task], evaluation: list[Task]) -> tuple[list[Task], Decontamination]:
    ids = {t.id for t in evaluation}
    keys = {grid_key(g) for t in evaluation for g in (*t.test_inputs, *(t.test_outputs or ()))}
    kept, dropped = [], {}
    for t in train:
        if t.id in ids:
            dropped[t.id] = "id in evaluation set"
            continue
        if any(grid_key(g) in keys for g in t.all_grids()):
            dropped[t.id] = "shares a test grid with the evaluation set"
            continue
        kept.append(t)
    return kept, Decontamination(dropped)


def to_canvas(grid: np.ndarray) -> np.ndarray:
    canvas = np.full((MAX_SIZE, MAX_SIZE), OUTSIDE, dtype=np.uint8)
    canvas[: grid.shape[0], : grid.shape[1]] = grid
    return canvas


@dataclass
class ExampleTable:
    """All training examples, pre-augmented, each grid at the canvas's top-left corner."""

    inputs: np.ndarray  # [N, 30, 30] uint8
    outputs: np.ndarray  # [N, 30, 30] uint8
    in_size: np.ndarray  # [N, 2] int
    out_size: np.ndarray  # [N, 2] int
    code_index: np.ndarray  # [N] row in the task-code table
    fingerprints: list[str]  # per task, in code-table order
    task_ids: list[str]
    variants: int

    def __len__(self) -> int:
        return len(self.inputs)


def build_examples(tasks: list[tuple[Task, bool]], variants: int, keep_background: bool = True) -> ExampleTable:
    """`tasks` pairs each task with whether its test pairs may be trained on (training tasks only)."""
    ins, outs, code = [], [], []
    fps, ids = [], []
    for t_index, (task, use_tests) in enumerate(tasks):
        fps.append(fingerprint(task))
        ids.append(task.id)
        pairs = [(p.input, p.output) for p in task.train]
        if use_tests and task.test_outputs is not None:
            pairs += list(zip(task.test_inputs, task.test_outputs, strict=True))
        for v, aug in enumerate(variant_augmentations(task, variants, keep_background)):
            for i, o in pairs:
                ins.append(aug.apply(i))
                outs.append(aug.apply(o))
                code.append(t_index * variants + v)
    return ExampleTable(
        inputs=np.stack([to_canvas(g) for g in ins]),
        outputs=np.stack([to_canvas(g) for g in outs]),
        in_size=np.array([g.shape for g in ins], dtype=np.int64),
        out_size=np.array([g.shape for g in outs], dtype=np.int64),
        code_index=np.array(code, dtype=np.int64), fingerprints=fps, task_ids=ids, variants=variants)


def assemble(training: list[tuple[str, str]], evaluation: list[tuple[str, str]], include_eval_demos: bool,
             variants: int, keep_background: bool = True) -> tuple[ExampleTable, Decontamination]:
    """Load, de-duplicate, decontaminate and expand the run's tasks."""
    eval_tasks = [t for name, split in evaluation for t in load_dataset(name, split)]
    train_tasks, seen = [], set()
    for name, split in training:
        for t in load_dataset(name, split):
            if t.id not in seen:
                seen.add(t.id)
                train_tasks.append(t)
    kept, report = decontaminate(train_tasks, eval_tasks)
    log.info("decontamination: %s", report.summary())
    chosen: list[tuple[Task, bool]] = [(t, True) for t in kept]
    if include_eval_demos:
        known = {fingerprint(t) for t, _ in chosen}
        for t in eval_tasks:
            if fingerprint(t) not in known:  # the same task may sit in two evaluation sets
                known.add(fingerprint(t))
                chosen.append((t.without_answers(), False))
    return build_examples(chosen, variants, keep_background), report


def sample_batch(table: ExampleTable, step: int, rank: int, batch_size: int, seed: int, translate: bool,
                 device: torch.device) -> dict[str, torch.Tensor]:
    """The batch for (step, rank) is a pure function of them: a resumed run sees the same data."""
    rng = np.random.default_rng([seed, step, rank])
    idx = rng.integers(len(table), size=batch_size)
    inputs = torch.from_numpy(table.inputs[idx]).to(device, torch.long)
    outputs = torch.from_numpy(table.outputs[idx]).to(device, torch.long)
    in_size, out_size = table.in_size[idx], table.out_size[idx]
    if translate:  # move input and output together to a random offset where both fit
        span = MAX_SIZE - np.maximum(in_size, out_size)
        offset = torch.from_numpy((rng.random((batch_size, 2)) * (span + 1)).astype(np.int64)).to(device)
        inputs, outputs = shift(inputs, offset), shift(outputs, offset)
    else:
        offset = torch.zeros(batch_size, 2, dtype=torch.long, device=device)
    return {"inputs": inputs, "outputs": outputs, "offset": offset,
            "out_size": torch.from_numpy(out_size).to(device),
            "code_index": torch.from_numpy(table.code_index[idx]).to(device)}


def shift(canvas: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Translate top-left-placed grids by per-example (row, col) offsets; only OUTSIDE wraps."""
    ar = torch.arange(MAX_SIZE, device=canvas.device)
    rows = (ar[None, :] - offset[:, :1]) % MAX_SIZE
    cols = (ar[None, :] - offset[:, 1:]) % MAX_SIZE
    b = torch.arange(canvas.shape[0], device=canvas.device)[:, None, None]
    return canvas[b, rows[:, :, None], cols[:, None, :]]
