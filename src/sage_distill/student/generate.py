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
from .drafts import draft
from .modeling_sage import KVCache, SageModel
from .sequences import MAX_OUTPUT_TOKENS, MAX_SIZE, decode_output, encode_pair

DRAFTS = 3  # guessed tokens per greedy step: docs/BENCHMARKS.md, "Drafted tokens"


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


def advance(token: np.ndarray, row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Position of an output token emitted at the cursor (row, col), and the cursor after it
    (the rule of `sequences.encode_pair`: <end> sits at column 0, a newline opens the next row)."""
    is_end, is_newline = token == END, token == NEWLINE
    pos = np.stack([row, np.where(is_end, 0, col), np.ones_like(row)], -1)
    return pos, row + is_newline, np.where(is_newline, 1, col + 1)


class TorchSteps:
    """The model calls of `_generate` on a torch SageModel: a preallocated KV cache that every step
    attends over whole, `key_valid` masking what is not written, not kept or is left padding."""

    def __init__(self, model: SageModel) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.cache: KVCache | None = None
        self.fed = 0  # tokens of the last step, each row keeping the first `commit` says

    def prefill(self, tokens, pos, task, view, role, valid, max_new: int) -> torch.Tensor:
        """Left-padded prompts [B, P] -> last-position logits [B, VOCAB]; task, view: [B, 1]."""
        b, p = tokens.shape
        self.cache = KVCache.empty(self.model.config, b, p + max_new + 2 * DRAFTS, self.device,
                                   next(self.model.parameters()).dtype)
        self.cache.key_valid[:, :p] = valid
        causal = torch.ones(p, p, dtype=torch.bool, device=self.device).tril()
        eye = torch.eye(p, dtype=torch.bool, device=self.device)
        mask = (valid[:, None, None, :] & causal) | eye  # pads see themselves
        return self.model(tokens, pos, task.expand(b, p), view.expand(b, p), role, mask, self.cache)[:, -1]

    def step(self, tokens, pos, task, view, role) -> torch.Tensor:
        """N tokens per sequence ([B, N], causal among themselves) -> logits [B, N, VOCAB]."""
        cache, (b, n) = self.cache, tokens.shape
        start = cache.length
        if start + n > cache.k.shape[3]:  # rows kept different counts for long: room for another answer
            cache.grow(MAX_OUTPUT_TOKENS)
        causal = torch.ones(n, n, dtype=torch.bool, device=self.device).tril()
        mask = torch.cat([cache.key_valid[:, None, None, :start].expand(b, 1, n, start),
                          causal.expand(b, 1, n, n)], -1)
        self.fed = n
        return self.model(tokens, pos, task.expand(b, n), view.expand(b, n), role, mask, cache)

    def commit(self, counts: np.ndarray) -> None:
        """Row i keeps the first counts[i] tokens of the last step; the cache's write position moves past the
        most any row kept, the other rows' unkept slots staying masked."""
        cache = self.cache
        start = cache.length - self.fed
        kept = torch.arange(self.fed, device=self.device)[None] < torch.as_tensor(counts, device=self.device)[:, None]
        cache.key_valid[:, start:start + self.fed] = kept
        cache.length = start + int(counts.max())

    def keep(self, rows: torch.Tensor) -> None:
        self.cache.keep(rows)


@torch.no_grad()
def generate(model, jobs: list[Job], max_new: int = MAX_OUTPUT_TOKENS, temperature: float = 0.0,
             generator: torch.Generator | None = None, drafts: int = DRAFTS) -> list[Candidate]:
    """Decode every job in one batch: greedy, or sampled at `temperature` > 0 (on-policy distillation).
    `model`: a SageModel, or any runner with a `steps()` method returning an object like `TorchSteps`
    (the ONNX Runtime one: `student.onnx_runtime`). `drafts`: tokens guessed per greedy step (`drafts.py`)."""
    if not isinstance(model, SageModel):
        return _generate(model.steps(), jobs, max_new, temperature, generator, drafts)
    if next(model.parameters()).device.type != "cuda":
        return _generate(TorchSteps(model), jobs, max_new, temperature, generator, drafts)
    # cuDNN's attention spent ~1.7 ms of CPU per call here (measured, bench_decode --profile on an
    # H200), more than the whole step's GPU time: use the memory-efficient kernel instead.
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        return _generate(TorchSteps(model), jobs, max_new, temperature, generator, drafts)


def _generate(steps, jobs: list[Job], max_new: int, temperature: float = 0.0,
              generator: torch.Generator | None = None, drafts: int = DRAFTS) -> list[Candidate]:
    """The decoding loop shared by every runtime: left padding, the position cursor, colour roles
    through the inverse permutation, <end> handling and the candidates' summed log-probability.

    Greedy decoding is speculative: each step feeds the token just chosen and `drafts` guessed ones
    (`drafts.draft`), and a row keeps the guesses, in order, while each equals the argmax the model gives
    before it. The tokens are the one-token-a-step greedy ones (the same argmaxes of the same causal
    model); a step only advances further when the guesses are right. Sampling guesses nothing."""
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
    inverse = np.stack([np.argsort(np.asarray(j.aug.colors)) for j in jobs])
    grids = [j.aug.apply(j.grid) for j in jobs]  # what the drafts copy: the input as its view shows it
    k = drafts if temperature == 0 else 0

    logits = steps.prefill(tokens, pos, task, view, role, valid, max_new)  # [B, VOCAB]: after the last token

    out = np.full((b, max_new), END, dtype=np.int64)
    length = np.zeros(b, dtype=np.int64)  # output tokens so far, per job
    logprob = np.zeros(b)
    live = np.arange(b)  # batch rows still decoding -> job index
    done = np.zeros(b, dtype=bool)
    row, col = np.ones(b, dtype=np.int64), np.ones(b, dtype=np.int64)
    width = np.zeros(b, dtype=np.int64)  # the output's first-row width, 0 while its first row is open

    def emit(token: np.ndarray, logp: np.ndarray, taking: np.ndarray) -> np.ndarray:
        """Append token[i] to the rows `taking` and move their cursors; returns the tokens' positions."""
        nonlocal row, col, done
        at = live[taking]
        out[at, length[at]] = token[taking]
        length[at] += 1
        logprob[at] += logp[taking]
        tok_pos, new_row, new_col = advance(token, row, col)
        opens = taking & (token == NEWLINE) & (width == 0)
        width[opens] = col[opens] - 1
        row, col = np.where(taking, new_row, row), np.where(taking, new_col, col)
        ended = (token == END) | (row > MAX_SIZE + 1) | (col > MAX_SIZE + 1) | (length[live] == max_new)
        done = done | (taking & ended)
        return tok_pos

    def as_t(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, device=device)

    while True:
        step_logp = torch.log_softmax(logits.float(), dim=-1)
        if temperature > 0:
            drawn = torch.multinomial(torch.softmax(logits.float() / temperature, -1), 1, generator=generator)[:, 0]
        else:
            drawn = step_logp.argmax(-1)
        nxt = np.where(done, END, drawn.cpu().numpy())
        tok_pos = emit(nxt, step_logp.gather(1, as_t(nxt)[:, None])[:, 0].cpu().numpy(), ~done)
        if done.all():
            break
        if done.sum() * 2 >= len(done):  # drop finished rows when many are (a copy of the cache)
            keep = np.nonzero(~done)[0]
            steps.keep(as_t(keep))
            live, done, row, col, width, nxt, tok_pos, inverse = (x[keep] for x in (live, done, row, col, width, nxt,
                                                                                     tok_pos, inverse))
            task, view = task[keep], view[keep]
        # Feed the chosen token and k guesses after it, each at the position the cursor gives it.
        guess = np.full((len(live), k), END, dtype=np.int64)  # finished rows: <end>, never kept
        for i in np.nonzero(~done)[0] if k else []:
            j = live[i]
            guess[i] = draft(grids[j], out[j, :length[j]], row[i], col[i], width[i], k)
        fed, fed_pos, r, c = np.concatenate([nxt[:, None], guess], 1), [tok_pos], row, col
        for i in range(k):
            at, r, c = advance(guess[:, i], r, c)
            fed_pos.append(at)
        fed_role = np.where(fed < 10, np.take_along_axis(inverse, np.minimum(fed, 9), 1), -1)
        every = steps.step(as_t(fed), as_t(np.stack(fed_pos, 1)), task, view, as_t(fed_role))  # [B, 1 + k, VOCAB]
        # Keep the guesses, in order, while each is the argmax of the logits before it.
        kept = np.ones(len(live), dtype=np.int64)
        if k:
            guess_logp = torch.log_softmax(every[:, :k].float(), -1)
            best = guess_logp.argmax(-1).cpu().numpy()
            guess_logp = guess_logp.gather(-1, as_t(guess)[..., None])[..., 0].cpu().numpy()
            taking = ~done
            for i in range(k):
                taking = taking & (best[:, i] == guess[:, i])
                emit(guess[:, i], guess_logp[:, i], taking)
                kept += taking
                taking = taking & ~done
        steps.commit(kept)
        logits = every[torch.arange(len(live), device=device), as_t(kept - 1)]

    results = []
    for j, toks, lp in zip(jobs, out, logprob.tolist(), strict=True):
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
