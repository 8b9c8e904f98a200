"""Rows of the student's own answers, for on-policy distillation: the student decodes (greedy or
sampled) the outputs of training inputs seen under a fresh view, and its answers are packed into
rows like any training batch, labelled with the student's own tokens, for the teacher to score.

Only training inputs are read, never an output: the student's answer replaces the output. An answer
that is not a grid (ragged rows, no end) cannot be laid out in 3-D positions and is dropped (counted
as `invalid` in the logs). Which pairs and views a step uses is a pure function of (seed, step, rank).
"""

from __future__ import annotations

import numpy as np
import torch

from ..arc.augment import Augmentation, random_color_perm
from ..student.configuration_sage import IGNORE
from ..student.generate import Job, generate
from ..student.modeling_sage import SageModel
from ..student.sequences import encode_pair
from .data import PackedRows, fill_row, stack_rows


def on_policy_rows(model: SageModel, packed: PackedRows, rows: int, pairs: int, seed: int, step: int,
                   rank: int = 0, temperature: float = 0.0, max_tokens: int | None = None
                   ) -> tuple[dict[str, torch.Tensor] | None, dict[str, float]]:
    """`rows` packed rows of the student's answers to `pairs` training inputs (fewer when they do not
    fit; only pairs whose answer has at most `max_tokens` tokens, if given), with "generated" labels
    instead of "labels"; None when no answer was a grid."""
    table, row_len = packed.table, packed.row_len
    rng = np.random.default_rng([seed, step, rank, 0x0B])
    eligible = np.arange(len(table))
    if max_tokens is not None:
        h = np.array([g.shape[0] for g in table.outputs])
        w = np.array([g.shape[1] for g in table.outputs])
        eligible = eligible[np.maximum(h * (w + 1), w * (h + 1)) + 1 <= max_tokens]
    if not len(eligible):
        return None, {"on_policy_valid": 0.0, "on_policy_docs": 0.0}
    chosen = rng.choice(eligible, size=min(pairs, len(eligible)), replace=False)
    augs = [Augmentation(int(d), random_color_perm(rng, movable=packed.palette(int(table.task_index[p]))))
            for p, d in zip(chosen, rng.integers(8, size=len(chosen)), strict=True)]
    jobs = [Job(table.inputs[p], a, table.embedding_row(p)) for p, a in zip(chosen, augs, strict=True)]
    # Decode no longer than the longest true answer among them (+ a row): a longer answer is wrong anyway.
    out_h = np.array([table.outputs[p].shape[0] for p in chosen])
    out_w = np.array([table.outputs[p].shape[1] for p in chosen])
    longest = int(np.maximum(out_h * (out_w + 1), out_w * (out_h + 1)).max()) + 1 + 31
    device = next(model.parameters()).device
    gen = torch.Generator(device).manual_seed(int(rng.integers(2**31))) if temperature > 0 else None
    was_training = model.training
    model.eval()
    # Eager (decoding shapes change every step: no recompiles) and in the weights' float32: the KV cache
    # holds float32, and the training step's bf16 autocast would mix dtypes in attention.
    with torch.compiler.set_stance("force_eager"), torch.autocast(device.type, enabled=False):
        candidates = generate(model, jobs, max_new=longest, temperature=temperature, generator=gen)
    model.train(was_training)
    docs, used, filled = [], 0, []
    for p, job, cand in zip(chosen, jobs, candidates, strict=True):
        if cand.grid is None:
            continue
        enc = encode_pair(table.inputs[p], cand.grid, job.aug)
        if used + len(enc.tokens) > row_len:
            filled.append(docs)
            docs, used = [], 0
            if len(filled) == rows:
                break
        docs.append((enc, job.task_row, job.aug.dihedral, int(p)))
        used += len(enc.tokens)
    if docs and len(filled) < rows:
        filled.append(docs)
    valid = sum(c.grid is not None for c in candidates)
    stats = {"on_policy_valid": valid / max(1, len(candidates)),
             "on_policy_docs": float(sum(len(d) for d in filled))}
    if not filled:
        return None, stats
    while len(filled) < rows:  # keep the batch's shape fixed (compiled graphs): empty rows carry no loss
        filled.append([])
    batch = stack_rows([fill_row(row_len, d) for d in filled])
    batch["generated"] = batch.pop("labels")
    batch["labels"] = torch.full_like(batch["generated"], IGNORE)
    return {k: v.to(device) for k, v in batch.items()}, stats

