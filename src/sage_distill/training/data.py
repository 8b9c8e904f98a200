"""Training data: which tasks, which pairs, which views, packed into rows without padding waste.

Rules that keep evaluation honest:
- A run declares the evaluation sets it will be scored on. Every training task that shares an id,
  or any grid with a test input or test output of those sets, is dropped and logged
  (ARC-AGI-2's training set holds 376 of ARC-AGI-1's evaluation tasks).
- From evaluation tasks only the demonstration pairs are used (the transductive protocol, as the
  anchors do); their test outputs never enter a batch: the tasks are stripped with
  `without_answers()` before any pair is taken.

Tasks are keyed by a fingerprint of their demonstration pairs (never their id), so a predictor
reading an answer-free challenges file finds the same embedding rows.

Every epoch visits each pair once, in a fresh order, under a fresh view (a dihedral transform and
a permutation of colours 1-9, or with `palette_views` of the colours the task's inputs show only);
sequences are packed greedily into rows of `row_len` tokens, the
tail of a row filled by one padding document that carries no loss. The rows of (step, rank) are a
pure function of (seed, step, rank): a resumed run sees exactly the data it would have seen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..arc.augment import Augmentation, input_palette, random_color_perm
from ..arc.datasets import load_dataset
from ..arc.task import Task, fingerprint, grid_key
from ..errors import SageError
from ..student.configuration_sage import IGNORE
from ..student.sequences import Encoded, encode_pair, sequence_length

log = logging.getLogger(__name__)


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


@dataclass
class PairTable:
    """Every training pair with the embedding row of its task."""

    inputs: list[np.ndarray]
    outputs: list[np.ndarray]
    task_index: np.ndarray  # [N]: the pair's task, a row of the lists below
    fingerprints: list[str]  # row -> task fingerprint
    task_ids: list[str]
    palettes: list[tuple[int, ...]]  # row -> the colours of the task's inputs (`arc.augment.input_palette`)
    # The model's embedding row of task 0: an adaptation's tasks sit after the trained rows (`adapt_tasks`).
    first_row: int = 0

    def __len__(self) -> int:
        return len(self.inputs)

    def embedding_row(self, pair: int) -> int:
        """The model's task-embedding row of a pair."""
        return self.first_row + int(self.task_index[pair])


def build_pairs(tasks: list[tuple[Task, bool]]) -> PairTable:
    """`tasks` pairs each task with whether its test pairs may be trained on (training tasks only)."""
    ins, outs, rows, fps, ids, palettes = [], [], [], [], [], []
    for row, (task, use_tests) in enumerate(tasks):
        fps.append(fingerprint(task))
        ids.append(task.id)
        palettes.append(input_palette([p.input for p in task.train], task.test_inputs))
        pairs = [(p.input, p.output) for p in task.train]
        if use_tests:
            if task.test_outputs is None:
                raise ValueError(f"task {task.id}: test pairs requested but the task has no answers")
            pairs += list(zip(task.test_inputs, task.test_outputs, strict=True))
        for i, o in pairs:
            ins.append(i)
            outs.append(o)
            rows.append(row)
    return PairTable(ins, outs, np.array(rows, dtype=np.int64), fps, ids, palettes)


def assemble(training: list[tuple[str, str]], evaluation: list[tuple[str, str]],
             include_eval_demos: bool) -> tuple[PairTable, Decontamination]:
    """Load, de-duplicate, decontaminate and list the run's pairs."""
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
    return build_pairs(chosen), report


def pair_lengths(table: PairTable) -> np.ndarray:
    """Each pair's token count in its longer orientation (transposing views swap height and width)."""
    h_in, w_in = (np.array([g.shape[k] for g in table.inputs]) for k in (0, 1))
    h_out, w_out = (np.array([g.shape[k] for g in table.outputs]) for k in (0, 1))
    return np.maximum(sequence_length(h_in, w_in, h_out, w_out), sequence_length(w_in, h_in, w_out, h_out))


class PackedRows:
    """Rows of packed sequences; row g of the whole run is a pure function of (seed, g)."""

    def __init__(self, table: PairTable, row_len: int, seed: int, palette_views: bool = False) -> None:
        self.table, self.row_len, self.seed, self.palette_views = table, row_len, seed, palette_views
        self.h_in = np.array([g.shape[0] for g in table.inputs])
        self.w_in = np.array([g.shape[1] for g in table.inputs])
        self.h_out = np.array([g.shape[0] for g in table.outputs])
        self.w_out = np.array([g.shape[1] for g in table.outputs])
        self._starts = [0]  # first global row of each planned epoch
        longest = pair_lengths(table)
        if len(longest) and longest.max() > row_len:
            i = int(longest.argmax())
            raise SageError(f"optim.row_len: {row_len} tokens cannot hold a pair of task "
                            f"{table.task_ids[table.task_index[i]]} ({int(longest[i])} tokens); raise it to >= 1863")

    @lru_cache(maxsize=4)  # noqa: B019 (one object per run)
    def plan(self, epoch: int) -> list[list[tuple[int, int, int]]]:
        """Rows of (pair, dihedral, view seed) for one epoch, packed greedily in a shuffled order."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.table))
        dihedral = rng.integers(8, size=len(order))
        transposed = dihedral >= 4  # k >= 4 transposes; odd quarter-turns swap height and width too
        swap = transposed ^ (dihedral % 2 == 1)
        h_in = np.where(swap, self.w_in[order], self.h_in[order])
        w_in = np.where(swap, self.h_in[order], self.w_in[order])
        h_out = np.where(swap, self.w_out[order], self.h_out[order])
        w_out = np.where(swap, self.h_out[order], self.w_out[order])
        lengths = sequence_length(h_in, w_in, h_out, w_out)
        rows, row, used = [], [], 0
        for k, (pair, length) in enumerate(zip(order.tolist(), lengths.tolist(), strict=True)):
            if used + length > self.row_len:
                rows.append(row)
                row, used = [], 0
            row.append((pair, int(dihedral[k]), k))
            used += length
        if row:
            rows.append(row)
        return rows

    def palette(self, task_row: int) -> tuple[int, ...] | None:
        """The colours a view may move for this task (None: all of 1-9)."""
        return self.table.palettes[task_row] if self.palette_views else None

    def locate(self, g: int) -> tuple[int, int]:
        """(epoch, row in epoch) of global row g."""
        while self._starts[-1] <= g:
            e = len(self._starts) - 1
            self._starts.append(self._starts[-1] + len(self.plan(e)))
        epoch = int(np.searchsorted(self._starts, g, side="right")) - 1
        return epoch, g - self._starts[epoch]

    def row(self, g: int) -> dict[str, np.ndarray]:
        epoch, r = self.locate(g)
        docs = []
        for pair, dihedral, k in self.plan(epoch)[r]:
            colours = random_color_perm(np.random.default_rng([self.seed, epoch, k]),
                                        movable=self.palette(int(self.table.task_index[pair])))
            enc = encode_pair(self.table.inputs[pair], self.table.outputs[pair], Augmentation(dihedral, colours))
            docs.append((enc, self.table.embedding_row(pair), dihedral, pair))
        return fill_row(self.row_len, docs)


def fill_row(n: int, docs: list[tuple[Encoded, int, int, int]]) -> dict[str, np.ndarray]:
    """One packed row of `n` token slots from (encoded pair, task row, dihedral, pair index) documents,
    labelled on their output tokens and <end>; the tail is one padding document that carries no loss
    (pair -1: a feature-store teacher has nothing for it)."""
    out = {"tokens": np.zeros(n, np.int64), "pos": np.zeros((n, 3), np.int64), "role": np.full(n, -1, np.int64),
           "task": np.zeros(n, np.int64), "view": np.zeros(n, np.int64), "labels": np.full(n, IGNORE, np.int64),
           "doc": np.zeros(n, np.int64), "real": np.zeros(n, bool), "pair": np.full(n, -1, np.int64)}
    used = 0
    for doc, (enc, task_row, dihedral, pair) in enumerate(docs):
        s = slice(used, used + len(enc.tokens))
        out["tokens"][s], out["pos"][s], out["role"][s] = enc.tokens, enc.pos, enc.role
        out["task"][s], out["view"][s], out["doc"][s], out["pair"][s] = task_row, dihedral, doc, pair
        labels = np.full(len(enc.tokens), IGNORE, np.int64)
        labels[enc.output_start:-1] = enc.tokens[enc.output_start + 1:]  # predict output tokens and <end>
        out["labels"][s] = labels
        used += len(enc.tokens)
    out["real"][:used] = True
    out["doc"][used:] = out["doc"][max(used - 1, 0)] + 1
    return out


def stack_rows(rows: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.stack([r[k] for r in rows])) for k in rows[0]}


class StepBatches(torch.utils.data.Dataset):
    """Item `step` is this rank's batch at that step: `rows` packed rows stacked."""

    def __init__(self, packed: PackedRows, rows: int, rank: int, world: int) -> None:
        self.packed, self.rows, self.rank, self.world = packed, rows, rank, world

    def __len__(self) -> int:
        return 1 << 40

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        first = (step * self.world + self.rank) * self.rows
        return stack_rows([self.packed.row(first + i) for i in range(self.rows)])
