"""The SAGE student: presets, decontamination on the real datasets, halting, prediction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sage_distill.arc import load_dataset
from sage_distill.arc.task import grid_key
from sage_distill.demo import run_demo
from sage_distill.distill.losses import LossInputs, TaskLoss
from sage_distill.student import SageConfig, SageModel
from sage_distill.student.checkpoint import TaskCodes, load_model, save_model
from sage_distill.student.predict import PredictConfig, predict_file, run_steps, vote
from sage_distill.training.data import assemble, build_examples, decontaminate, fingerprint, variant_augmentations


def test_preset_sizes() -> None:
    sizes = {p: SageModel(SageConfig.preset(p)).num_parameters() for p in ("tiny", "small", "base")}
    assert sizes["tiny"] < 1_000_000
    assert sizes["small"] <= 7_000_000
    assert 40_000_000 <= sizes["base"] <= 60_000_000


def test_decontamination_drops_arc1_eval_from_arc2_training() -> None:
    evaluation = load_dataset("arc1", "evaluation")
    kept, report = decontaminate(load_dataset("arc2", "training"), evaluation)
    by_id = [t for t, r in report.dropped.items() if r.startswith("id")]
    assert len(by_id) == 376  # the known overlap
    eval_ids = {t.id for t in evaluation}
    eval_keys = {grid_key(g) for t in evaluation for g in (*t.test_inputs, *t.test_outputs)}
    assert not any(t.id in eval_ids for t in kept)
    assert not any(grid_key(g) in eval_keys for t in kept for g in t.all_grids())


def test_evaluation_tasks_contribute_demonstrations_only() -> None:
    table, _ = assemble([("arc1", "training")], [("arc1", "evaluation")], True, variants=2)
    evaluation = {t.id: t for t in load_dataset("arc1", "evaluation")}
    first_eval = next(i for i, tid in enumerate(table.task_ids) if tid in evaluation)
    rows = table.code_index // table.variants >= first_eval
    expected = sum(len(t.train) for t in evaluation.values()) * 2
    assert rows.sum() == expected
    # No identity-variant example of an evaluation task is one of its test pairs (a demonstration
    # output may equal a test output by chance, so the check is on whole pairs).
    ident = rows & (table.code_index % table.variants == 0)
    pairs = {(grid_key(i[:a, :b]), grid_key(o[:c, :d])) for i, o, (a, b), (c, d)
             in zip(table.inputs[ident], table.outputs[ident], table.in_size[ident], table.out_size[ident],
                    strict=True)}
    for t in evaluation.values():
        for i, o in zip(t.test_inputs, t.test_outputs, strict=True):
            assert (grid_key(i), grid_key(o)) not in pairs


def test_variant_augmentations_come_from_demonstrations_only() -> None:
    task = load_dataset("arc1", "evaluation")[0]
    stripped = task.without_answers()
    assert fingerprint(task) == fingerprint(stripped)
    assert variant_augmentations(task, 8) == variant_augmentations(stripped, 8)
    table = build_examples([(stripped, False)], variants=8)
    assert len(table) == 8 * len(task.train)


def test_task_loss_is_small_for_the_right_answer_and_large_for_a_wrong_one() -> None:
    cfg = SageConfig.preset("tiny")
    outputs = torch.full((1, 30, 30), 10)
    outputs[0, :2, :3] = torch.tensor([[1, 2, 3], [0, 0, 4]])
    batch = {"outputs": outputs, "out_size": torch.tensor([[2, 3]])}
    logits = torch.nn.functional.one_hot(outputs, cfg.vocab).float() * 30
    size = torch.zeros(1, 30)
    readout = type("R", (), {})()
    readout.logits, readout.height_logits, readout.width_logits = logits, size.clone(), size.clone()
    readout.height_logits[0, 1] = 30
    readout.width_logits[0, 2] = 30
    right = TaskLoss()(LossInputs([readout], batch))
    readout.logits = logits.roll(1, dims=-1)
    wrong = TaskLoss()(LossInputs([readout], batch))
    assert right < 1e-3 and wrong > 10


def test_adaptive_halting_stops_when_the_head_is_confident() -> None:
    torch.manual_seed(0)
    model = SageModel(SageConfig.preset("tiny")).eval()
    tokens, codes = torch.randint(0, 11, (3, 30, 30)), torch.randn(3, model.config.code_dim)
    with torch.no_grad():
        model.decoder.halt.bias.fill_(10.0)  # every step says "final"
    _, used = run_steps(model, tokens, codes, PredictConfig(halting="adaptive"))
    assert used.tolist() == [1.0, 1.0, 1.0]
    _, used = run_steps(model, tokens, codes, PredictConfig(halting="fixed"))
    assert used.tolist() == [model.config.max_steps] * 3
    with torch.no_grad():
        model.decoder.halt.bias.fill_(-10.0)
    _, used = run_steps(model, tokens, codes, PredictConfig(halting="adaptive"))
    assert used.tolist() == [model.config.max_steps] * 3


def test_vote_ranks_by_count_then_confidence() -> None:
    a, b, c = np.zeros((2, 2), np.uint8), np.ones((2, 2), np.uint8), np.ones((1, 2), np.uint8)
    ranked = vote([a, b, b, c, a], [0.1, 0.2, 0.2, 0.9, 0.9])
    assert [g.tolist() for g in ranked] == [a.tolist(), b.tolist(), c.tolist()]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny")
    model = SageModel(SageConfig.preset("tiny"))
    tasks = load_dataset("arc1", "evaluation")[:2]
    codes = TaskCodes(torch.randn(2 * 4, model.config.code_dim), [fingerprint(t) for t in tasks], 4)
    save_model(folder, model, codes)
    return folder


def test_checkpoint_round_trip(tiny_model_dir) -> None:
    model, codes = load_model(tiny_model_dir)
    again = SageModel(model.config)
    assert codes is not None and codes.variants == 4 and len(codes.rows) == 2
    again.load_state_dict(model.state_dict())
    tokens, c = torch.randint(0, 11, (1, 30, 30)), torch.randn(1, model.config.code_dim)
    assert torch.equal(model(tokens, c)[-1].logits, again.eval()(tokens, c)[-1].logits)


def test_predict_is_deterministic_resumable_and_fits_unseen_tasks(tiny_model_dir, tmp_path) -> None:
    model, codes = load_model(tiny_model_dir)
    # Two tasks with codes in the table and one the model has never seen (codes fitted).
    tasks = [t.without_answers() for t in load_dataset("arc1", "evaluation")[:2]]
    tasks.append(load_dataset("arc1", "training")[0].without_answers())
    cfg = PredictConfig(tta_steps=2)
    stats = predict_file(model, codes, tasks, tmp_path / "a.json", cfg)
    assert stats["codes_fitted"] == 1 and stats["tasks"] == 3
    first = json.loads((tmp_path / "a.json").read_text())
    assert set(first) == {t.id for t in tasks}
    assert all(len(first[t.id]) == len(t.test_inputs) for t in tasks)
    # A killed run: one finished task and a line cut mid-write. The resumed run redoes the rest.
    partial = tmp_path / "b.json.partial.jsonl"
    row = {"task": tasks[0].id, "attempts": first[tasks[0].id], "steps": 1.0, "codes": "table", "seconds": 0.1}
    partial.write_text(json.dumps(row) + "\n" + '{"task": "cut')
    predict_file(model, codes, tasks, tmp_path / "b.json", cfg)
    assert json.loads((tmp_path / "b.json").read_text()) == first
    assert not partial.exists()


def test_demo_runs_the_released_model(tmp_path) -> None:
    report = run_demo(tmp_path, tasks=1)
    assert report["tasks"] == 1 and set(report["baselines"]) == {"copy", "background"}
    assert list((tmp_path / "renders").glob("*.png"))
    assert (tmp_path / "predictions.json").exists()
