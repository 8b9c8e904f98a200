"""Batched, KV-cached greedy decoding of output grids, the vote over augmented views, and the
re-scoring of the leading candidates by their likelihood under every view (product of experts).

Prompts of different lengths are left-padded so that every sequence of a batch writes its next
token into the same cache slot; padding keys are masked out. Each generated token gets its 3-D
position from a per-sequence (row, column) cursor: a newline moves to the next row.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from ..arc.augment import IDENTITY_COLORS, Augmentation, random_color_perm
from .configuration_sage import END, NEWLINE
from .modeling_sage import KVCache, SageModel
from .sequences import MAX_OUTPUT_TOKENS, MAX_SIZE, decode_output, encode_pair


@dataclass
class Job:
    """One test input seen under one view, for one task-embedding row."""

    grid: np.ndarray
    aug: Augmentation
    task_row: int


@dataclass
class Candidate:
    grid: np.ndarray | None  # mapped back through the view's inverse; None if not a valid grid
    logprob: float  # summed log-probability of the generated tokens


def advance(token: torch.Tensor, row: torch.Tensor, col: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Position of an output token emitted at the cursor (row, col), and the cursor after it
    (the rule of `sequences.encode_pair`: <end> sits at column 0, a newline opens the next row)."""
    is_end, is_newline = token == END, token == NEWLINE
    pos = torch.stack([row, torch.where(is_end, torch.zeros_like(col), col), torch.ones_like(row)], -1)
    return pos, row + is_newline.long(), torch.where(is_newline, torch.ones_like(col), col + 1)


class TorchSteps:
    """The model calls of `_generate` on a torch SageModel: a preallocated KV cache that every step
    attends over whole, `key_valid` masking what is not written or is left padding."""

    def __init__(self, model: SageModel) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.cache: KVCache | None = None

    def prefill(self, tokens, pos, task, view, role, valid, max_new: int) -> torch.Tensor:
        """Left-padded prompts [B, P] -> last-position logits [B, VOCAB]; task, view: [B, 1]."""
        b, p = tokens.shape
        self.cache = KVCache.empty(self.model.config, b, p + max_new, self.device,
                                   next(self.model.parameters()).dtype)
        self.cache.key_valid[:, :p] = valid
        causal = torch.ones(p, p, dtype=torch.bool, device=self.device).tril()
        eye = torch.eye(p, dtype=torch.bool, device=self.device)
        mask = (valid[:, None, None, :] & causal) | eye  # pads see themselves
        return self.model(tokens, pos, task.expand(b, p), view.expand(b, p), role, mask, self.cache)[:, -1]

    def step(self, tokens, pos, task, view, role) -> torch.Tensor:
        """One token per sequence ([B, 1]) -> logits [B, VOCAB]."""
        cache = self.cache
        cache.key_valid[:, cache.length] = True
        return self.model(tokens, pos, task, view, role, cache.key_valid[:, None, None, :], cache)[:, -1]

    def keep(self, rows: torch.Tensor) -> None:
        self.cache.keep(rows)


@torch.no_grad()
def generate(model, jobs: list[Job], max_new: int = MAX_OUTPUT_TOKENS, temperature: float = 0.0,
             generator: torch.Generator | None = None) -> list[Candidate]:
    """Decode every job in one batch: greedy, or sampled at `temperature` > 0 (on-policy distillation).
    `model`: a SageModel, or any runner with a `steps()` method returning an object like `TorchSteps`
    (the ONNX Runtime one: `student.onnx_runtime`)."""
    if not isinstance(model, SageModel):
        return _generate(model.steps(), jobs, max_new, temperature, generator)
    if next(model.parameters()).device.type != "cuda":
        return _generate(TorchSteps(model), jobs, max_new, temperature, generator)
    # cuDNN's attention spent ~1.7 ms of CPU per call here (measured, bench_decode --profile on an
    # H200), more than the whole step's GPU time: use the memory-efficient kernel instead.
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        return _generate(TorchSteps(model), jobs, max_new, temperature, generator)


def _generate(steps, jobs: list[Job], max_new: int, temperature: float = 0.0,
              generator: torch.Generator | None = None) -> list[Candidate]:
    """The decoding loop shared by every runtime: left padding, the position cursor, colour roles
    through the inverse permutation, <end> handling and the candidates' summed log-probability."""
    device = steps.device
    enc = [encode_pair(j.grid, None, j.aug) for j in jobs]
    b, p = len(jobs), max(len(e.tokens) for e in enc)
    tokens = torch.zeros(b, p, dtype=torch.long)
    pos = torch.zeros(b, p, 3, dtype=torch.long)
    role = torch.full((b, p), -1, dtype=torch.long)
    valid = torch.zeros(b, p, dtype=torch.bool)
    for i, e in enumerate(enc):  # left padding
        n = len(e.tokens)
        tokens[i, p - n:], pos[i, p - n:], role[i, p - n:] = (torch.from_numpy(e.tokens), torch.from_numpy(e.pos),
                                                              torch.from_numpy(e.role))
        valid[i, p - n:] = True
    tokens, pos, role, valid = tokens.to(device), pos.to(device), role.to(device), valid.to(device)
    task = torch.tensor([j.task_row for j in jobs], device=device)[:, None]
    view = torch.tensor([j.aug.dihedral for j in jobs], device=device)[:, None]
    inverse = torch.tensor(np.stack([np.argsort(np.asarray(j.aug.colors)) for j in jobs]), device=device)

    logits = steps.prefill(tokens, pos, task, view, role, valid, max_new)

    out = torch.full((b, max_new), END, dtype=torch.long, device=device)
    logprob = torch.zeros(b, device=device)
    live = torch.arange(b, device=device)  # batch rows still decoding -> original job index
    done = torch.zeros(b, dtype=torch.bool, device=device)
    row = torch.ones(b, dtype=torch.long, device=device)
    col = torch.ones(b, dtype=torch.long, device=device)
    for t in range(max_new):
        step_logp = torch.log_softmax(logits.float(), dim=-1)
        if temperature > 0:
            drawn = torch.multinomial(torch.softmax(logits.float() / temperature, -1), 1, generator=generator)[:, 0]
        else:
            drawn = step_logp.argmax(-1)
        nxt = torch.where(done, END, drawn)
        logprob[live] += torch.where(done, 0.0, step_logp.gather(1, nxt[:, None])[:, 0])
        out[live, t] = nxt
        tok_pos, row, col = advance(nxt, row, col)
        tok_role = torch.where(nxt < 10, inverse.gather(1, nxt.clamp(max=9)[:, None])[:, 0], -1)
        done = done | (nxt == END) | (row > MAX_SIZE + 1) | (col > MAX_SIZE + 1)
        if t == max_new - 1:
            break
        if t % 16 == 15:  # every few steps: stop when all are done, and drop finished rows when many are
            n_done = int(done.sum())
            if n_done == len(done):
                break
            if n_done * 2 >= len(done):
                keep = (~done).nonzero()[:, 0]
                steps.keep(keep)
                live, done, row, col, nxt, tok_pos, tok_role = (x[keep] for x in (live, done, row, col, nxt, tok_pos,
                                                                                   tok_role))
                task, view, inverse = task[keep], view[keep], inverse[keep]
        logits = steps.step(nxt[:, None], tok_pos[:, None], task, view, tok_role[:, None])

    generated, scores = out.cpu().numpy(), logprob.cpu().tolist()
    results = []
    for j, toks, lp in zip(jobs, generated, scores, strict=True):
        grid = decode_output(toks)
        results.append(Candidate(None if grid is None else j.aug.invert(grid), lp))
    return results


@torch.no_grad()
def sequence_logprobs(model: SageModel, items: list[tuple[Job, np.ndarray]], tokens_per_batch: int) -> list[float]:
    """Log-likelihood of each (job, output grid) under the job's view: the output tokens' log-probabilities
    (<end> included) summed, teacher-forced in one causal pass. Sequences are right-padded, so plain causal
    attention never reads padding; batches hold about `tokens_per_batch` tokens, similar lengths together."""
    device = next(model.parameters()).device
    enc = [encode_pair(j.grid, out, j.aug) for j, out in items]
    order = sorted(range(len(items)), key=lambda i: len(enc[i].tokens))
    scores = [0.0] * len(items)
    s = 0
    while s < len(order):
        e = s + 1  # lengths ascend: the batch's last sequence is its longest
        while e < len(order) and (e - s + 1) * len(enc[order[e]].tokens) <= tokens_per_batch:
            e += 1
        part = order[s:e]
        n = max(len(enc[i].tokens) for i in part)
        tokens = torch.full((len(part), n), END, dtype=torch.long)
        pos = torch.zeros(len(part), n, 3, dtype=torch.long)
        role = torch.full((len(part), n), -1, dtype=torch.long)
        scored = torch.zeros(len(part), n, dtype=torch.bool)  # positions whose next token is an output token
        for r, i in enumerate(part):
            x = enc[i]
            m = len(x.tokens)
            tokens[r, :m], pos[r, :m], role[r, :m] = (torch.from_numpy(x.tokens), torch.from_numpy(x.pos),
                                                      torch.from_numpy(x.role))
            scored[r, x.output_start:m - 1] = True
        task = torch.tensor([items[i][0].task_row for i in part])[:, None].expand(-1, n)
        view = torch.tensor([items[i][0].aug.dihedral for i in part])[:, None].expand(-1, n)
        tokens, pos, role, scored, task, view = (t.to(device) for t in (tokens, pos, role, scored, task, view))
        logp = torch.log_softmax(model(tokens, pos, task, view, role, None).float(), -1)
        nxt = logp[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
        total = (nxt * scored[:, :-1]).sum(1).tolist()
        for r, i in enumerate(part):
            scores[i] = total[r]
        s = e
    return scores


def rescore(model: SageModel, tallies: list[Tally], jobs: list[list[Job]], count: int,
            tokens_per_batch: int) -> None:
    """Product of experts: each test input's `count` most-voted candidates are scored under every one of
    its views (`jobs[i]`, the views it was decoded under) and ranked by the sum (`Tally.poe`). A candidate
    that only a few views produced can win when every view finds it likely."""
    items, owners = [], []
    for i, (tally, views) in enumerate(zip(tallies, jobs, strict=True)):
        for k in tally.leaders(count):
            for j in views:
                items.append((j, tally.grids[k]))
                owners.append((i, k))
    for (i, k), lp in zip(owners, sequence_logprobs(model, items, tokens_per_batch), strict=True):
        tallies[i].poe[k] = tallies[i].poe.get(k, 0.0) + lp


def view_augmentations(seed_key: str, count: int, palette: tuple[int, ...] | None = None) -> list[Augmentation]:
    """View k: dihedral k mod 8; the first 8 keep the colours, later ones permute colours 1-9 (0 stays
    background), drawn from a generator seeded by the task's fingerprint. With `palette` (the task's input
    colours, for models trained with `palette_views`) only those colours move; the views are distinct, so
    a task with few input colours may have fewer than `count`."""
    rng = np.random.default_rng(int(seed_key[:15], 16))
    limit = count
    if palette is not None:
        limit = min(count, 8 * math.factorial(len([c for c in palette if c != 0])))
    views, seen = [], set()
    k = 0
    while len(views) < limit:
        colours = IDENTITY_COLORS if k < 8 else random_color_perm(rng, movable=palette)
        aug = Augmentation(k % 8, colours)
        if aug not in seen:
            seen.add(aug)
            views.append(aug)
        k += 1
    return views


@dataclass
class Tally:
    """Votes for one test input, accumulated over batches of views (an IRP step adds one batch)."""

    votes: Counter
    logprob: dict
    grids: dict
    views: int = 0
    invalid: int = 0
    poe: dict = field(default_factory=dict)  # candidate -> log-likelihood summed over every view (rescore)
    prefixes: dict = field(default_factory=dict)  # n -> the Tally of the first n views (predict's --curve)

    @staticmethod
    def empty() -> Tally:
        return Tally(Counter(), {}, {})

    def add(self, candidates: list[Candidate], test_input: np.ndarray) -> None:
        copy_key = _key(test_input)
        for c in candidates:
            self.views += 1
            if c.grid is None:
                self.invalid += 1
                continue
            k = _key(c.grid)
            self.grids[k] = c.grid
            self.logprob[k] = self.logprob.get(k, 0.0) + c.logprob
            # A copy of the input is kept as a last resort only: counted apart, never outranking a real answer.
            self.votes[k] += 1 if k != copy_key else 0
            if k == copy_key:
                self.logprob[k] -= 1e9

    def ranked(self, by_votes: bool = False) -> list[np.ndarray]:
        """Candidates best first: the re-scored ones (if any) by their product-of-experts likelihood, then
        the rest by votes, ties broken by the summed likelihood of their own decodings."""
        order = sorted(self.grids, key=lambda k: (self.votes[k], self.logprob[k]), reverse=True)
        if self.poe and not by_votes:
            order = sorted(self.poe, key=self.poe.get, reverse=True) + [k for k in order if k not in self.poe]
        return [self.grids[k] for k in order]

    def attempts(self, fallback: np.ndarray, by_votes: bool = False) -> dict[str, list]:
        r = self.ranked(by_votes) or [fallback]
        return {"attempt_1": r[0].tolist(), "attempt_2": (r[1] if len(r) > 1 else r[0]).tolist()}

    def leaders(self, count: int) -> list[tuple]:
        """Keys of the `count` most-voted candidates, a copy of the input excluded (it never outranks)."""
        order = sorted(self.grids, key=lambda k: (self.votes[k], self.logprob[k]), reverse=True)
        return [k for k in order if self.votes[k] > 0][:count]

    def leader_share(self) -> float:
        total = sum(self.votes.values())
        return max(self.votes.values()) / total if total else 0.0

    def top_two_settled(self, remaining_views: int) -> bool:
        """True when no remaining view can change which two answers lead."""
        counts = sorted(self.votes.values(), reverse=True) + [0, 0, 0]
        return counts[1] - counts[2] > remaining_views


def _key(grid: np.ndarray) -> tuple:
    return (grid.shape, np.ascontiguousarray(grid, dtype=np.uint8).tobytes())
