"""The ARC plugins on a real (tiny, randomly initialised) SAGE model: the solver's views, vote,
halting and adaptation in steps; DREAM; vision; and the ATP bound on 10 real ARC tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sage_distill.arc.datasets import load_dataset
from sage_distill.arc.task import Pair, Task, fingerprint
from sage_distill.evaluation.predict import solve_chunk
from sage_distill.irp import Budget, refine
from sage_distill.irp.config import OrchestratorSettings
from sage_distill.irp.memory import Memory
from sage_distill.irp.orchestrator import Orchestrator
from sage_distill.irp.plugins.arc_solver import ArcSolver, demonstration_loss, task_to_memory
from sage_distill.irp.plugins.vision import Vision
from sage_distill.irp.salience import Snarc
from sage_distill.student import SageConfig, SageModel
from sage_distill.student.configuration_sage import END, IO_SEP, NEWLINE, VOCAB
from sage_distill.student.generate import Candidate, Tally

pytestmark = pytest.mark.usefixtures("one_thread")


def g(rows: list[list[int]]) -> np.ndarray:
    return np.array(rows, dtype=np.uint8)


def flip_task(tid: str = "t1") -> Task:
    pairs = (Pair(g([[1, 0], [0, 2]]), g([[0, 1], [2, 0]])), Pair(g([[3, 3, 0]]), g([[0, 3, 3]])))
    return Task(tid, pairs, (g([[5, 0], [0, 6]]), g([[7, 0, 0]])), (g([[0, 5], [6, 0]]), g([[0, 0, 7]])))


def tiny(num_tasks: int = 1, seed: int = 0, short: bool = True) -> SageModel:
    """A random tiny model. `short`: its token embeddings and head are rigged so that greedy decoding
    says `0 <newline> <end>` at once (a random model never says <end> and decodes 931 tokens per
    view: too slow for a unit test); the plumbing under test is the same."""
    torch.manual_seed(seed)
    model = SageModel(SageConfig.preset("tiny").model_copy(update={"num_tasks": num_tasks})).eval()
    if short:
        with torch.no_grad():
            tok = torch.nn.functional.normalize(torch.randn(VOCAB, model.config.hidden), dim=-1) * 8
            model.tok.weight.copy_(tok)
            model.head.weight.zero_()
            for prev, nxt in ((IO_SEP, 0), (0, NEWLINE), (NEWLINE, END)):
                model.head.weight[nxt] = tok[prev] / 8
    return model


def test_one_step_is_one_batch_of_views_and_the_answer_is_predicts_vote() -> None:
    model, task = tiny(), flip_task().without_answers()
    solver = ArcSolver(model, [fingerprint(task)], max_views=8, views_per_step=4)
    s = solver.init_state(task, {})
    assert s.row == 0 and s.adapt_left == 0 and solver.energy(s) == 1.0  # known task: no adaptation
    s1 = solver.step(s)
    assert s1.decoded == 4 and s1.last == {"views": 8}  # 2 test inputs x 4 views
    assert all(t.views == 4 for t in s1.tallies)
    assert solver.energy(s1) == pytest.approx(np.mean([1 - t.leader_share() for t in s1.tallies]))
    s2 = solver.step(s1)
    assert s2.decoded == 8 and solver.halt_reason(s2) == "views spent"
    ans = solver.answer(s2)
    # The same views, decoded and voted by the predict path, give the same attempts.
    want = solve_chunk(model, [task], {fingerprint(task): 0}, 8, 16)[task.id]
    assert ans.value == [t.attempts(x) for t, x in zip(want, task.test_inputs, strict=True)]
    assert 0.0 <= ans.uncertainty <= 1.0 and ans.disagreement == pytest.approx(solver.energy(s2))


def test_steps_shrink_to_a_tenth_of_the_allocation() -> None:
    model, task = tiny(), flip_task().without_answers()
    solver = ArcSolver(model, [fingerprint(task)], max_views=8, views_per_step=4)
    assert solver.views_for(task, 10.0) == 4  # no measured cost yet: the configured step
    solver.step(solver.init_state(task, {}))  # measures ms per token
    per_view = solver.ms_per_token * sum(len(x) * (len(x[0]) + 1) + 1 for x in task.test_inputs)
    assert solver.views_for(task, 1e9) == 4
    assert solver.views_for(task, 10 * 2.5 * per_view) == 2  # a tenth of the allocation holds 2.5 views
    assert solver.views_for(task, 1e-9) == 1  # never less than one view
    s = solver.init_state(task, {"allocation_atp": 10 * 2.5 * per_view})
    assert solver.step(s).decoded == 2


def test_halts_when_the_top_two_can_no_longer_change() -> None:
    t = Tally.empty()
    inp = g([[1]])
    a, b = g([[2]]), g([[3]])
    t.add([Candidate(a, -1.0)] * 5 + [Candidate(b, -1.0)] * 3, inp)
    assert t.top_two_settled(2) and not t.top_two_settled(3)
    model, task = tiny(), flip_task().without_answers()
    solver = ArcSolver(model, [fingerprint(task)], max_views=12, views_per_step=4)
    s = solver.init_state(task, {})
    s.tallies[:] = [t, t]  # as if 8 views had voted 5 / 3 for both inputs
    s.decoded, s.energy = 8, 3 / 8
    assert solver.halt_reason(s) is None  # 4 views left could still lift a third answer to 3
    s.views = s.views[:10]  # only 2 left: the top two are settled
    assert solver.halt_reason(s) == "top two settled"
    loose = ArcSolver(model, [fingerprint(task)], max_views=12, energy_threshold=0.5, min_views=8)
    s.views = loose.init_state(task, {}).views
    assert loose.halt_reason(s) == "confident"  # disagreement 3/8 <= 0.5 after 8 views


def test_refine_adapts_an_unknown_task_in_steps_then_decodes() -> None:
    model = tiny(num_tasks=3)
    solver = ArcSolver(model, ["a" * 24, "b" * 24, "c" * 24], max_views=4, views_per_step=2, adapt_steps=3)
    task = flip_task().without_answers()
    state, trace = refine(solver, task, {}, Budget(max_steps=solver.steps_needed()))
    assert solver.rows[fingerprint(task)] == 3 and model.config.num_tasks == 4  # a fresh row
    assert solver.adapted[fingerprint(task)] == 3
    assert len(trace.steps) == 3 + 2 and trace.halt_reason in ("views spent", "top two settled")
    assert trace.energies[:4] == [1.0] * 4  # nothing voted while adapting
    assert all(t.views == 4 for t in state.tallies)  # the returned state holds every vote
    assert solver.ms_per_adapt_step > 0 and solver.ms_per_token > 0
    again = solver.init_state(flip_task("other id").without_answers(), {})
    assert again.adapt_left == 0 and again.row == 3  # adapted once per fingerprint


def test_dream_adapts_rows_on_stored_demonstrations_only(tmp_path) -> None:
    model = tiny()
    stored = task_to_memory(flip_task())
    assert all("output" not in t for t in stored["test"])  # memory never holds test answers
    mem = Memory(tmp_path / "m.sqlite")
    mem.add("t1", np.ones(4, np.float32), stored, None, [1.0], Snarc(1, 1, 1, 0, 1), 0.8)
    solver = ArcSolver(model, [], dream_steps=3, adapt_lr=0.05)
    fp = fingerprint(flip_task())
    stats = solver.learn(mem.most_salient(4), atp=60_000)
    assert stats["tasks"] == 1 and stats["grad_steps"] == 3 and solver.adapted[fp] == 3
    assert stats["loss_after"] < stats["loss_before"]
    assert demonstration_loss(model, flip_task(), solver.rows[fp]) == pytest.approx(stats["loss_after"])
    assert solver.learn(mem.most_salient(4), atp=0.0)["tasks"] == 0  # no time, no step
    mem.close()


def test_vision_embeds_demonstrations() -> None:
    model = tiny()
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


def test_budget_holds_on_10_real_arc_tasks() -> None:
    """10 ARC-AGI-1 evaluation tasks through the ARC plugin (unknown to the model: adaptation, then
    views) under a small ATP budget: no cycle overspends by more than one call's measured cost."""
    model = tiny(num_tasks=2)
    tasks = load_dataset("arc1", "evaluation")[:10]
    solver = ArcSolver(model, ["a" * 24, "b" * 24], max_views=8, views_per_step=1, adapt_steps=2)
    # 20 ATP (ms): far below one task's 2 adaptation steps + 8 views on any CPU, so the budget must stop it.
    settings = OrchestratorSettings(base_budget=20.0, reserve_capacity=1e9)
    orch = Orchestrator([solver], settings, max_steps={"arc_solver": solver.steps_needed()})
    stopped = 0
    for task in tasks:
        res = orch.cycle(task.without_answers(), key=task.id)
        rec = res.record["plugins"]["arc_solver"]
        calls = [rec["init_ms"], *rec["ms"]]
        assert res.spent - res.record["limit"] <= max(calls) + 1e-6, (task.id, res.spent, calls)
        stopped += rec["halt_reason"].startswith("budget: atp")
        if res.answer is not None:
            assert len(res.answer) == len(task.test_inputs)
    assert stopped >= 1, "the budget never stopped the plugin: the test does not exercise the limit"
