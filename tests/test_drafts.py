"""Speculative greedy decoding: the drafts (`student/drafts.py`) and the decoding loop that checks them
(`generate._generate`), against a scripted model that writes a known answer, and against one-token steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sage_distill.student.configuration_sage import END, NEWLINE, VOCAB
from sage_distill.student.drafts import draft
from sage_distill.student.generate import Job, TorchSteps, _generate, view_augmentations

N, E = NEWLINE, END


def tokens(g: np.ndarray) -> list[int]:
    return [t for r in g.tolist() for t in [*r, NEWLINE]] + [END]


def test_a_same_size_output_is_guessed_to_copy_the_input_and_end_where_it_ends() -> None:
    g = np.array([[1, 2], [3, 4]])
    assert draft(g, np.array([], dtype=np.int64), 1, 1, 0, 4).tolist() == [1, 2, N, 3]
    assert draft(g, np.array([1, 2, N, 3], dtype=np.int64), 2, 2, 2, 4).tolist() == [4, N, E, E]


def test_a_changed_cell_is_guessed_to_go_on_to_its_right() -> None:
    g = np.zeros((2, 4), dtype=np.int64)
    assert draft(g, np.array([0, 8], dtype=np.int64), 1, 3, 0, 3).tolist() == [8, 8, N]
    assert draft(g, np.array([0, 0], dtype=np.int64), 1, 3, 0, 3).tolist() == [0, 0, N]


def test_an_output_of_another_width_repeats_the_row_above() -> None:
    g = np.zeros((3, 3), dtype=np.int64)
    emitted = np.array([5, 6, N, 7], dtype=np.int64)  # first row of width 2, not the input's 3
    assert draft(g, emitted, 2, 2, 2, 5).tolist() == [6, N, 7, 6, N]


class Scripted:
    """Steps of a model that writes `answers[i]` (token lists) for row i, whatever it is fed: the logits at
    an output token's position favour the answer's token after that position (right or wrong guesses alike,
    as a causal model's logits after a wrong token are never read)."""

    device = torch.device("cpu")

    def __init__(self, answers: list[list[int]], widths: list[int]) -> None:
        self.answers, self.widths, self.rows, self.calls = answers, widths, list(range(len(answers))), 0

    def _logits(self, row: int, index: int) -> torch.Tensor:
        out = torch.zeros(VOCAB)
        out[self.answers[row][min(index, len(self.answers[row]) - 1)]] = 10.0
        return out

    def prefill(self, tokens, *args) -> torch.Tensor:
        return torch.stack([self._logits(r, 0) for r in self.rows])

    def step(self, tokens, pos, task, view, role) -> torch.Tensor:
        self.calls += 1
        out = torch.zeros(*tokens.shape, VOCAB)
        for i, r in enumerate(self.rows):
            for j in range(tokens.shape[1]):
                row, col = int(pos[i, j, 0]), int(pos[i, j, 1])
                at = len(self.answers[r]) - 1 if col == 0 else (row - 1) * (self.widths[r] + 1) + col - 1
                out[i, j] = self._logits(r, at + 1)
        return out

    def commit(self, counts) -> None:
        assert (counts >= 1).all()

    def keep(self, rows) -> None:
        self.rows = [self.rows[i] for i in rows.tolist()]


def _jobs_and_answers(edit) -> tuple[list[Job], list[list[int]], list[int]]:
    rng = np.random.default_rng(0)
    jobs, answers, widths = [], [], []
    for i, aug in enumerate(view_augmentations("0123456789abcdef", 8)):
        g = rng.integers(0, 10, (int(rng.integers(2, 7)), int(rng.integers(2, 7)))).astype(np.uint8)
        jobs.append(Job(g, aug, 0))
        answer = edit(aug.apply(g), i)
        answers.append(tokens(answer))
        widths.append(answer.shape[1])
    return jobs, answers, widths


@pytest.mark.parametrize("edit, halves_the_steps", [
    (lambda g, i: g, True),  # a copy: every guess is right
    (lambda g, i: np.where(g == 3, 7, g), True),  # a recolouring: guesses right between changes
    (lambda g, i: np.tile(g[:1, :2], (i % 3 + 1, 2)), False),  # another size
], ids=["copy", "recolour", "resize"])
def test_drafted_decoding_writes_the_answer_in_fewer_steps(edit, halves_the_steps: bool) -> None:
    jobs, answers, widths = _jobs_and_answers(edit)
    plain, drafted = Scripted(answers, widths), Scripted(answers, widths)
    a = _generate(plain, jobs, max_new=60, drafts=0)
    b = _generate(drafted, jobs, max_new=60, drafts=3)
    for job, x, y, answer in zip(jobs, a, b, answers, strict=True):
        expect = job.aug.invert(np.array([r.split(",") for r in _rows(answer)], dtype=np.uint8))
        assert np.array_equal(x.grid, expect) and np.array_equal(y.grid, expect)
        assert x.logprob == pytest.approx(y.logprob, abs=1e-5)
    assert plain.calls == max(len(t) for t in answers) - 1  # one token a step
    assert drafted.calls < plain.calls / 2 if halves_the_steps else drafted.calls < plain.calls


def _rows(answer: list[int]) -> list[str]:
    rows, row = [], []
    for t in answer[:-1]:
        if t == NEWLINE:
            rows.append(",".join(map(str, row)))
            row = []
        else:
            row.append(t)
    return rows


def test_drafted_decoding_equals_one_token_steps_on_a_model() -> None:
    """A tiny random model biased towards the background: many guesses right, many wrong; the candidates
    (grids or none, and summed log-probabilities) are those of one-token steps."""
    from test_student import tiny

    m = tiny(2)
    real = m.forward

    def biased(*a, **k):
        logits = real(*a, **k)
        logits[..., 0] += 2.0
        logits[..., NEWLINE] += 1.0
        return logits

    m.forward = biased
    rng = np.random.default_rng(3)
    jobs = [Job(np.where(rng.random((h, w)) < 0.7, 0, rng.integers(0, 10, (h, w))).astype(np.uint8), a, i % 2)
            for i, a in enumerate(view_augmentations("abcdef0123456789", 12))
            for h, w in [(int(rng.integers(1, 6)), int(rng.integers(1, 6)))]]
    kept = []

    class Counting(TorchSteps):
        def commit(self, counts) -> None:
            kept.append(counts.copy())
            super().commit(counts)

    with torch.no_grad():
        one, three = _generate(TorchSteps(m), jobs, 50, drafts=0), _generate(Counting(m), jobs, 50, drafts=3)
    assert sum(int((k > 1).sum()) for k in kept) >= 20 and sum(int((k == 1).sum()) for k in kept) >= 10
    for x, y in zip(one, three, strict=True):
        assert (x.grid is None) == (y.grid is None) and (x.grid is None or np.array_equal(x.grid, y.grid))
        assert x.logprob == pytest.approx(y.logprob, abs=1e-4)


def test_sampling_guesses_nothing() -> None:
    jobs, answers, widths = _jobs_and_answers(lambda g, i: g)
    steps = Scripted(answers, widths)
    _generate(steps, jobs, max_new=60, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert steps.calls == max(len(t) for t in answers) - 1
