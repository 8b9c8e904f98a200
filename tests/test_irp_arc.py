"""The ARC plugins on a real (tiny, randomly initialised) SAGE model: solver, vision, DREAM learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sage_distill.student.adapt import fit_codes

from sage_distill.arc.task import Pair, Task
from sage_distill.irp import Budget, refine
from sage_distill.irp.memory import Memory
from sage_distill.irp.plugins.arc_solver import ArcSolver, task_to_memory
from sage_distill.irp.plugins.codes import FittedCodes
from sage_distill.irp.plugins.vision import Vision
from sage_distill.irp.salience import Snarc
from sage_distill.student import SageConfig, SageModel


def g(rows: list[list[int]]) -> np.ndarray:
    return np.array(rows, dtype=np.uint8)


def flip_task(tid: str = "t1") -> Task:
    pairs = (Pair(g([[1, 0], [0, 2]]), g([[0, 1], [2, 0]])), Pair(g([[3, 3, 0]]), g([[0, 3, 3]])))
    return Task(tid, pairs, (g([[5, 0], [0, 6]]), g([[7, 0, 0]])), (g([[0, 5], [6, 0]]), g([[0, 0, 7]])))


@pytest.fixture(scope="module")
def model() -> SageModel:
    torch.manual_seed(0)
    return SageModel(SageConfig.preset("tiny")).eval()


def test_solver_refines_and_answers_in_prize_format(model: SageModel) -> None:
    task = flip_task().without_answers()
    codes = torch.randn(2, model.config.code_dim)
    solver = ArcSolver(model, lambda t: codes, energy_threshold=-1e9)  # never confident: run the rule
    state, trace = refine(solver, task, {}, Budget(max_steps=4))
    assert 1 <= len(trace.steps) <= 4 and trace.halt_reason in ("budget: steps", "converged", "diverging")
    with torch.inference_mode():  # the energy is the halting head's, averaged over variants and inputs
        assert solver.energy(state) == pytest.approx(float((-state.readout.halt_logit).mean()))
        assert state.x.shape[0] == 2 * 2  # 2 test inputs x 2 variants
    ans = solver.answer(state)
    assert len(ans.value) == 2 and set(ans.value[0]) == {"attempt_1", "attempt_2"}
    for e in ans.value:
        for grid in e.values():
            a = np.array(grid)
            assert a.ndim == 2 and 1 <= a.shape[0] <= 30 and a.min() >= 0 and a.max() <= 9
    assert 0.0 <= ans.uncertainty <= 1.0 and ans.disagreement in (0.0, 0.5)


def test_confident_halting_head_stops_early(model: SageModel) -> None:
    solver = ArcSolver(model, lambda t: torch.zeros(1, model.config.code_dim), energy_threshold=1e9)
    _, trace = refine(solver, flip_task().without_answers(), {}, Budget(max_steps=4))
    assert trace.halt_reason == "confident" and len(trace.steps) == 1


def test_fitting_codes_lowers_the_demonstration_loss(model: SageModel) -> None:
    codes, curve = fit_codes(model, flip_task(), torch.zeros(2, model.config.code_dim), steps=4, lr=0.1)
    assert len(curve) == 4 and curve[-1] < curve[0]
    assert codes.shape == (2, model.config.code_dim) and not codes.requires_grad
    provider = FittedCodes(model, 2, steps=1)
    assert provider(flip_task()) is provider(flip_task())  # fitted once per fingerprint


def test_dream_learns_codes_from_stored_demonstrations_only(model: SageModel, tmp_path) -> None:
    stored = task_to_memory(flip_task())
    assert all("output" not in t for t in stored["test"])  # memory never holds test answers
    mem = Memory(tmp_path / "m.sqlite")
    mem.add("t1", np.ones(4, np.float32), stored, None, [1.0], Snarc(1, 1, 1, 0, 1), 0.8)
    solver = ArcSolver(model, lambda t: torch.zeros(2, model.config.code_dim), dream_steps=3, dream_lr=0.1)
    stats = solver.learn(mem.most_salient(4), atp=60_000)
    assert stats["tasks"] == 1 and stats["grad_steps"] == 3 and stats["loss_after"] < stats["loss_before"]
    learned = next(iter(solver.learned.values()))
    assert torch.equal(solver.task_codes(flip_task()), learned)  # consolidated codes are used from now on
    mem.close()


def test_vision_embeds_demonstrations(model: SageModel) -> None:
    vision = Vision(model, eps=0.0)
    state, trace = refine(vision, flip_task(), {}, Budget(max_steps=10))
    assert trace.halt_reason == "all pairs seen" and len(trace.steps) == 2
    emb = vision.context(state)["embedding"]
    assert emb.shape == (2 * model.config.hidden,) and np.isfinite(emb).all()
    again, _ = refine(vision, flip_task("other id"), {}, Budget(max_steps=10))
    assert np.array_equal(vision.context(again)["embedding"], emb)  # grids alone decide the embedding
    other = Task("x", (Pair(g([[4] * 5] * 5), g([[4]])),), (g([[1]]),))
    far, _ = refine(vision, other, {}, Budget(max_steps=10))
    assert not np.allclose(vision.context(far)["embedding"], emb)
