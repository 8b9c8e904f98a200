"""`sage-distill predict` / `eval`: answers from challenges only, resume after a kill, the time budget,
adaptation to tasks without an embedding, and bad input refused before anything is written."""

from __future__ import annotations

import json

import pytest
import torch

from arc_world import tiny_model_world
from sage_distill.arc.task import fingerprint
from sage_distill.evaluation.predict import PredictConfig, predict_file

pytestmark = pytest.mark.usefixtures("one_thread")


def kill_after_chunks(monkeypatch, n: int) -> list[str]:
    """predict's chunks run normally n times, then the process is "killed" (KeyboardInterrupt). Returns the
    first task id of every chunk started."""
    import sage_distill.evaluation.predict as pr

    solve, calls = pr.solve_chunk, []

    def killed(*a, **k):
        calls.append(a[1][0].id)
        if len(calls) == n + 1:
            raise KeyboardInterrupt
        return solve(*a, **k)

    monkeypatch.setattr(pr, "solve_chunk", killed)
    return calls


@pytest.fixture
def world(tmp_path):
    return tiny_model_world(tmp_path, 5)


def test_predict_writes_every_task_and_resumes_after_a_kill(world, tmp_path, monkeypatch) -> None:
    import hashlib

    import sage_distill.evaluation.predict as pr

    tasks, challenges, model = world
    cfg = PredictConfig(views=3, batch=1)  # one task per chunk: a kill after the second chunk keeps two tasks
    out = tmp_path / "pred" / "p.json"
    stats = predict_file(model, challenges, out, cfg)
    sub = json.loads(out.read_text())
    assert set(sub) == {t.id for t in tasks} and [len(sub[t.id]) for t in tasks] == [1, 2, 1, 2, 1]
    assert stats["unknown_tasks"] == 2 and stats["adapted"] == 0 and stats["unfinished"] == 0
    assert not out.with_name("p.json.partial.jsonl").exists()

    solve = pr.solve_chunk
    calls = kill_after_chunks(monkeypatch, 2)
    out2 = tmp_path / "killed" / "p.json"
    with pytest.raises(KeyboardInterrupt):
        predict_file(model, challenges, out2, cfg)
    partial = out2.with_name("p.json.partial.jsonl")
    lines = partial.read_text().splitlines()
    settings = json.loads(lines[0])["settings"]
    assert settings["challenges_sha256"] == hashlib.sha256(challenges.read_bytes()).hexdigest()
    assert (settings["views"], settings["seed"], settings["runtime"], len(settings["model_sha256"])) == (3, 0, "torch",
                                                                                                       64)
    assert [json.loads(line)["task"] for line in lines[1:]] == ["task000", "task001"] and not out2.exists()
    with partial.open("a") as f:  # the kill cut the third task's line
        f.write('{"task": "task002", "attem')
    calls.clear()
    monkeypatch.setattr(pr, "solve_chunk", lambda *a, **k: (calls.append(a[1][0].id), solve(*a, **k))[1])
    predict_file(model, challenges, out2, cfg)
    assert calls == ["task002", "task003", "task004"]  # the two finished tasks were not decoded again
    assert json.loads(out2.read_text()) == sub and not partial.exists()


@pytest.fixture
def partial_run(world, tmp_path):
    """A killed run's partial file (views 3), made with the real settings header and two finished tasks."""
    from sage_distill.evaluation.predict import resume_settings

    tasks, challenges, model = world
    out = tmp_path / "p.json"
    partial = tmp_path / "p.json.partial.jsonl"
    rows = [{"task": t.id, "attempts": [{"attempt_1": g.tolist(), "attempt_2": g.tolist()} for g in t.test_inputs],
             "views": 3, "invalid": 0, "seconds": 0.5} for t in tasks[:2]]
    header = {"settings": resume_settings(model, PredictConfig(views=3), challenges)}
    partial.write_text("".join(json.dumps(r) + "\n" for r in [header, *rows]))
    return challenges, model, out, partial


def test_a_resume_with_other_settings_is_refused_and_restart_starts_afresh(partial_run, tmp_path, cli) -> None:
    import re
    import shutil

    challenges, model, out, partial = partial_run
    before = partial.read_bytes()
    other_model = tmp_path / "other_model"
    shutil.copytree(model, other_model)
    cfg = json.loads((other_model / "config.json").read_text())
    (other_model / "config.json").write_text(json.dumps({**cfg, "palette_views": True}))
    other_challenges = tmp_path / "other.json"
    other_challenges.write_text(json.dumps(json.loads(challenges.read_text()), indent=1))
    tail = "; give the same ones, another --out, or --restart to start afresh"
    for args, differ in [(["--views", "4"], "--views was 3, now 4"), (["--seed", "7"], "--seed was 0, now 7"),
                         (["--model", other_model], r"--model \(its files' sha256\) was [0-9a-f]{12}\.\.\., now "
                                                    r"[0-9a-f]{12}\.\.\."),
                         (["--challenges", other_challenges], r"--challenges \(its sha256\) was [0-9a-f]{12}"),
                         (["--adapt-minutes", "1"], "--adapt-minutes was 0.0, now 1.0"),
                         (["--adapt-mode", "rows"], '--adapt-mode was "all", now "rows"')]:
        argv = {"--model": model, "--challenges": challenges, "--views": "3"}
        argv.update(zip(args[::2], args[1::2], strict=True))
        code, _, err = cli("predict", "--out", out, *[str(x) for kv in argv.items() for x in kv])
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert re.fullmatch(rf"error: {re.escape(str(partial))}: the partial answers were made with other settings "
                            rf"\({differ}.*\){re.escape(tail)}\n", err), err
        assert partial.read_bytes() == before and not out.exists()
    code, stdout, err = cli("predict", "--model", model, "--challenges", challenges, "--out", out, "--views", "4",
                            "--restart")
    assert code == 0 and "5 tasks, 4 views each" in stdout, err
    assert not partial.exists() and json.loads(out.with_name("p.stats.json").read_text())["views"] == 4


@pytest.mark.parametrize("line, message", [
    ("nope", "line 2: not valid JSON; rerun with --restart to start afresh"),
    ('{"task": "task000"}', "line 2: expected an object with task, attempts, views, invalid, seconds"),
    ('{"task": "zzz", "attempts": [], "views": 3, "invalid": 0, "seconds": 1}',
     "line 2: task 'zzz' is not in the challenges file"),
    ('{"task": "task002", "attempts": [{"attempt_1": [[12]]}], "views": 3, "invalid": 0, "seconds": 1}',
     "line 2: task task002, entry 0, attempt_1, row 0, column 0: cell is 12, outside 0-9"),
    ('{"task": "task003", "attempts": [{"attempt_1": [[1]]}], "views": 3, "invalid": 0, "seconds": 1}',
     "line 2: task task003 has 2 test inputs, the line 1 answers"),
    ('{"task": "task002", "attempts": [{"attempt_1": [[1]]}], "views": 3, "invalid": 0, "seconds": NaN}',
     "line 2: views must equal --views, invalid be a count up to views x test inputs, seconds a finite number >= 0"),
    ("DUPLICATE", "line 4: task task000 is listed twice"),
    ("NO HEADER", "line 1: no settings header (cut, or written by an older version); rerun with --restart to start "
                  "afresh")])
def test_malformed_partial_lines_are_refused_by_line(partial_run, cli, line, message) -> None:
    challenges, model, out, partial = partial_run
    lines = partial.read_text().splitlines()
    if line == "DUPLICATE":
        lines.append(lines[1])
    elif line == "NO HEADER":
        lines = lines[1:]
    else:
        lines.insert(1, line)
    partial.write_text("\n".join(lines) + "\n")
    before = partial.read_bytes()
    code, _, err = cli("predict", "--model", model, "--challenges", challenges, "--out", out, "--views", "3")
    assert code == 2 and err == f"error: {partial}: {message}\n"
    assert partial.read_bytes() == before and not out.exists()


def test_eval_refuses_other_settings_before_it_exports(partial_run, tmp_path, cli, monkeypatch) -> None:
    import sage_distill.evaluation.model_eval as me

    _, model, _, partial = partial_run
    ev = tmp_path / "ev"
    ev.mkdir()
    partial.rename(ev / "predictions.json.partial.jsonl")
    monkeypatch.setattr(me, "export_split", lambda d, s, folder: pytest.fail("exported before the check"))
    code, _, err = cli("eval", "--model", model, "--dataset", "arc1", "--out", ev, "--views", "2")
    assert code == 2 and "(--views was 3, now 2)" in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in ev.iterdir()) == ["predictions.json.partial.jsonl"]


def test_the_time_budget_leaves_unfinished_tasks_with_the_copy_answer(world, tmp_path) -> None:
    tasks, challenges, model = world
    out = tmp_path / "p.json"
    stats = predict_file(model, challenges, out, PredictConfig(views=2, minutes=1e-7))
    assert stats["unfinished"] == 5
    assert json.loads(out.read_text())[tasks[0].id][0]["attempt_1"] == tasks[0].test_inputs[0].tolist()


def test_tasks_without_an_embedding_are_adapted_once(world, tmp_path, monkeypatch) -> None:
    import sage_distill.evaluation.predict as pr

    tasks, challenges, model = world
    adapt, calls = pr.adapt_tasks, []
    monkeypatch.setattr(pr, "adapt_tasks", lambda *a, **k: (calls.append(k["seed"]), adapt(*a, **k))[1])
    out = tmp_path / "p.json"
    stats = predict_file(model, challenges, out, PredictConfig(views=2, adapt_minutes=5, adapt_steps=3))
    assert stats["unknown_tasks"] == 2 and stats["adapted"] == 2 and stats["adaptation"]["steps"] == 3
    saved = json.loads(out.with_name("p.json.adapted.json").read_text())
    assert saved["fingerprints"] == [fingerprint(t.without_answers()) for t in tasks[3:]]
    first = json.loads(out.read_text())
    again = predict_file(model, challenges, out, PredictConfig(views=2, adapt_minutes=5, adapt_steps=3))
    assert again["adapted"] == 2 and "steps" in again["adaptation"] and json.loads(out.read_text()) == first
    assert calls == [0]  # the saved adaptation was reused
    # Another seed (or model, or budget): the saved adaptation is not this run's, so it is made again.
    predict_file(model, challenges, out, PredictConfig(views=2, adapt_minutes=5, adapt_steps=3, seed=1))
    assert calls == [0, 1] and json.loads(out.with_name("p.json.adapted.json").read_text())["settings"]["seed"] == 1


def test_adapt_mode_all_caches_its_weights_and_leaves_known_tasks_alone(world, tmp_path, monkeypatch) -> None:
    """`all` trains a copy's shared weights too: they decode the unknown tasks only (the known ones keep the
    model folder's weights), are cached beside the output and reused by a rerun; another mode's cache is not
    this run's, so it is made again."""
    from safetensors.torch import load_file

    import sage_distill.evaluation.predict as pr

    tasks, challenges, model = world
    adapt, calls, decoded = pr.adapt_tasks, [], []
    monkeypatch.setattr(pr, "adapt_tasks", lambda *a, **k: (calls.append(k["mode"]), adapt(*a, **k))[1])
    solve = pr.solve_chunk
    monkeypatch.setattr(pr, "solve_chunk", lambda net, chunk, *a: (
        decoded.append((net.state_dict()["head.weight"].clone(), [t.id for t in chunk])), solve(net, chunk, *a))[1])
    cfg = PredictConfig(views=1, adapt_minutes=5, adapt_steps=3, adapt_mode="all")
    out = tmp_path / "p.json"
    stats = predict_file(model, challenges, out, cfg)
    assert stats["adapted"] == 2 and stats["adaptation"]["mode"] == "all" and calls == ["all"]
    cache = load_file(out.with_name("p.json.adapted.safetensors"))
    original = load_file(model / "model.safetensors")
    assert cache["task"].shape[0] == 2 and not torch.equal(cache["shared.head.weight"], original["head.weight"])
    assert {k.removeprefix("shared.") for k in cache if k.startswith("shared.")} == {
        k for k in original if not k.startswith("tasks.")}
    assert [(torch.equal(w, original["head.weight"]), ids) for w, ids in decoded] == [
        (True, [t.id for t in tasks[:3]]), (False, [t.id for t in tasks[3:]])]
    assert torch.equal(decoded[1][0], cache["shared.head.weight"])
    answers = json.loads(out.read_text())
    again = predict_file(model, challenges, out, cfg)
    assert calls == ["all"] and json.loads(out.read_text()) == answers  # reused: no training, the same answers
    assert again["adaptation"] == stats["adaptation"] and torch.equal(decoded[3][0], cache["shared.head.weight"])
    predict_file(model, challenges, out, cfg.model_copy(update={"adapt_mode": "rows"}))
    assert calls == ["all", "rows"] and json.loads(out.with_name("p.json.adapted.json").read_text())[
        "settings"]["adapt_mode"] == "rows"
    assert not any(k.startswith("shared.") for k in load_file(out.with_name("p.json.adapted.safetensors")))


@pytest.mark.parametrize("args, message", [
    (["--views", "0"], "--views"), (["--adapt-minutes", "-1"], "--adapt-minutes"), (["--minutes", "0"], "--minutes"),
    (["--device", "tpu"], "--device"), (["--device", "cuda"], "CUDA is not available"), (["--limit", "0"], "--limit"),
    (["--batch", "-2"], "--batch"), (["--batch", "5000"], "--batch: Input should be less than or equal to 4096"),
    (["--seed", str(2**32)], "--seed: Input should be less than or equal to 4294967295 (got 4294967296)"),
    (["--minutes", "inf"], "--minutes: Input should be a finite number"),
    (["--adapt-minutes", "nan"], "--adapt-minutes: Input should be a finite number"),
    (["--adapt-mode", "both"], "--adapt-mode: Input should be 'rows' or 'all' (got both)")])
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
    assert scores["inference"]["rescore"] == 2 and set(scores["also"]["votes"]) == {"pass@2", "pass@1"}
    votes = json.loads((tmp_path / "ev" / "predictions.votes.json").read_text())
    assert set(votes) == {t.id for t in tasks} and "votes pass@2" in out
    code, _, err = cli("eval", "--model", model, "--dataset", "arc1", "--out", tmp_path / "ev2", "--rescore", "65")
    assert code == 2 and "--rescore" in err and not (tmp_path / "ev2").exists()


def test_the_views_curve_equals_separate_runs_with_fewer_views(world, tmp_path, monkeypatch) -> None:
    """`--curve 1,2` answers from the first 1 and 2 views of a 4-view decoding: the same submissions as runs
    with --views 1 and --views 2 (the views are a prefix of the same deterministic sequence), also after a
    kill and a resume (the partial lines carry every answer set)."""
    import sage_distill.evaluation.predict as pr

    tasks, challenges, model = world
    out = tmp_path / "c" / "p.json"
    cfg = PredictConfig(views=4, curve=[2, 1], rescore=2, batch=1)
    stats = predict_file(model, challenges, out, cfg)
    assert stats["curve"] == [1, 2]
    for n in (1, 2):
        alone = tmp_path / f"v{n}" / "p.json"
        predict_file(model, challenges, alone, PredictConfig(views=n))
        assert json.loads(out.with_name(f"p.views{n}.json").read_text()) == json.loads(alone.read_text())
    solve = pr.solve_chunk
    kill_after_chunks(monkeypatch, 2)
    killed = tmp_path / "k" / "p.json"
    with pytest.raises(KeyboardInterrupt):
        predict_file(model, challenges, killed, cfg)
    monkeypatch.setattr(pr, "solve_chunk", solve)
    predict_file(model, challenges, killed, cfg)
    for name in ("p.json", "p.votes.json", "p.views1.json", "p.views2.json"):
        assert json.loads(killed.with_name(name).read_text()) == json.loads(out.with_name(name).read_text()), name
    with pytest.raises(ValueError, match="between 1 and --views - 1"):
        PredictConfig(views=4, curve=[4])


def _export(tasks, folder):
    from sage_distill.utils.io import atomic_write_json

    atomic_write_json(folder / "challenges.json", {t.id: t.to_json(with_answers=False) for t in tasks})
    atomic_write_json(folder / "solutions.json", {t.id: [g.tolist() for g in t.test_outputs] for t in tasks})
    return folder / "challenges.json", folder / "solutions.json"
