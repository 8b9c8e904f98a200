"""`sage-distill predict` / `eval`: answers from challenges only, resume after a kill, the time budget,
adaptation to tasks without an embedding, and bad input refused before anything is written."""

from __future__ import annotations

import json

import pytest
import torch

from arc_world import tiny_model_world
from sage_distill.arc.task import fingerprint
from sage_distill.evaluation.predict import PredictConfig, predict_file


@pytest.fixture
def world(tmp_path):
    return tiny_model_world(tmp_path, 5)


def test_predict_writes_every_task_and_resumes_after_a_kill(world, tmp_path) -> None:
    tasks, challenges, model = world
    out = tmp_path / "pred" / "p.json"
    stats = predict_file(model, challenges, out, PredictConfig(views=3))
    sub = json.loads(out.read_text())
    assert set(sub) == {t.id for t in tasks} and [len(sub[t.id]) for t in tasks] == [1, 2, 1, 2, 1]
    assert stats["unknown_tasks"] == 2 and stats["adapted"] == 0 and stats["unfinished"] == 0
    assert not out.with_name("p.json.partial.jsonl").exists()
    # A kill after one task: its line is kept, a half-written line is redone, the rest is predicted.
    marker = [{"attempt_1": [[7]], "attempt_2": [[7]]}]
    partial = out.with_name("p.json.partial.jsonl")
    partial.write_text(json.dumps({"task": tasks[0].id, "attempts": marker, "views": 3, "invalid": 0,
                                   "seconds": 0.0}) + "\n" + '{"task": "task001", "attem')
    predict_file(model, challenges, out, PredictConfig(views=3))
    resumed = json.loads(out.read_text())
    assert resumed[tasks[0].id] == marker and resumed[tasks[1].id] == sub[tasks[1].id]


def test_the_time_budget_leaves_unfinished_tasks_with_the_copy_answer(world, tmp_path) -> None:
    tasks, challenges, model = world
    out = tmp_path / "p.json"
    stats = predict_file(model, challenges, out, PredictConfig(views=2, minutes=1e-7))
    assert stats["unfinished"] == 5
    assert json.loads(out.read_text())[tasks[0].id][0]["attempt_1"] == tasks[0].test_inputs[0].tolist()


def test_tasks_without_an_embedding_are_adapted_once(world, tmp_path) -> None:
    tasks, challenges, model = world
    out = tmp_path / "p.json"
    stats = predict_file(model, challenges, out, PredictConfig(views=2, adapt_minutes=5, adapt_steps=3))
    assert stats["unknown_tasks"] == 2 and stats["adapted"] == 2 and stats["adaptation"]["steps"] == 3
    saved = json.loads(out.with_name("p.json.adapted.json").read_text())
    assert saved["fingerprints"] == [fingerprint(t.without_answers()) for t in tasks[3:]]
    first = json.loads(out.read_text())
    again = predict_file(model, challenges, out, PredictConfig(views=2, adapt_minutes=5, adapt_steps=3))
    assert again["adapted"] == 2 and "steps" in again["adaptation"] and json.loads(out.read_text()) == first


@pytest.mark.parametrize("args, message", [
    (["--views", "0"], "--views"), (["--adapt-minutes", "-1"], "--adapt-minutes"), (["--minutes", "0"], "--minutes"),
    (["--device", "tpu"], "--device"), (["--device", "cuda"], "CUDA is not available"), (["--limit", "0"], "--limit"),
    (["--batch", "-2"], "--batch")])
def test_bad_options_are_one_line_and_write_nothing(world, tmp_path, cli, monkeypatch, args, message) -> None:
    _, challenges, model = world
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "new" / "p.json"
    code, _, err = cli("predict", "--model", model, "--challenges", challenges, "--out", out, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and not out.parent.exists()


def test_bad_files_are_one_line_and_write_nothing(world, tmp_path, cli) -> None:
    _, challenges, model = world
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"task000": {"train": [{"input": [[1, 12]], "output": [[1]]}], "test": []}}))
    out = tmp_path / "new" / "p.json"
    for argv in (["--challenges", bad, "--model", model], ["--challenges", challenges, "--model", tmp_path],
                 ["--challenges", tmp_path / "missing.json", "--model", model]):
        code, _, err = cli("predict", *argv, "--out", out)
        assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1, err
        assert not out.parent.exists()
    code, _, err = cli("predict", "--model", model, "--challenges", challenges, "--out", tmp_path)
    assert code == 2 and "directory" in err


def test_eval_scores_beside_the_baselines(world, tmp_path, cli, monkeypatch) -> None:
    import sage_distill.evaluation.model_eval as me

    tasks, challenges, model = world
    monkeypatch.setattr(me, "export_split", lambda d, s, folder: _export(tasks, folder))
    code, out, err = cli("eval", "--model", model, "--dataset", "arc1", "--out", tmp_path / "ev", "--views", "2")
    assert code == 0, err
    scores = json.loads((tmp_path / "ev" / "scores.json").read_text())
    assert scores["inference"]["views"] == 2 and "copy" in out and "background" in out


def test_eval_with_rescoring_scores_the_vote_alone_beside_it(world, tmp_path, cli, monkeypatch) -> None:
    import sage_distill.evaluation.model_eval as me

    tasks, challenges, model = world
    monkeypatch.setattr(me, "export_split", lambda d, s, folder: _export(tasks, folder))
    code, out, err = cli("eval", "--model", model, "--dataset", "arc1", "--out", tmp_path / "ev", "--views", "3",
                         "--rescore", "2")
    assert code == 0, err
    scores = json.loads((tmp_path / "ev" / "scores.json").read_text())
    assert scores["inference"]["rescore"] == 2 and set(scores["vote_only"]) == {"pass@2", "pass@1"}
    votes = json.loads((tmp_path / "ev" / "predictions.votes.json").read_text())
    assert set(votes) == {t.id for t in tasks} and "the vote alone" in out
    code, _, err = cli("eval", "--model", model, "--dataset", "arc1", "--out", tmp_path / "ev2", "--rescore", "65")
    assert code == 2 and "--rescore" in err and not (tmp_path / "ev2").exists()


def _export(tasks, folder):
    from sage_distill.utils.io import atomic_write_json

    atomic_write_json(folder / "challenges.json", {t.id: t.to_json(with_answers=False) for t in tasks})
    atomic_write_json(folder / "solutions.json", {t.id: [g.tolist() for g in t.test_outputs] for t in tasks})
    return folder / "challenges.json", folder / "solutions.json"
