"""Distillation as a stage of the one training loop: a student trained by `train` with `teacher:` and
`losses:` in its config learns towards a frozen SAGE teacher (logit, feature and on-policy terms, each
logged), resumes exactly, checkpoints nothing of the teacher, and bad teacher configs are refused
before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from arc_world import small_world
from sage_distill.errors import SageError
from sage_distill.student.checkpoint import load_model
from sage_distill.training.config import TrainConfig, load_config
from sage_distill.training.train import build, train

pytestmark = pytest.mark.usefixtures("one_thread")
STUDENT = {"hidden": 32, "heads": 2, "layers": 1, "mlp_hidden": 64}
KD = [{"name": "task"}, {"name": "logit", "weight": 1.0, "temperature": 2.0},
      {"name": "feature", "weight": 0.5}, {"name": "on_policy", "weight": 1.0, "every": 2, "pairs": 6}]


def config(out: Path, steps: int = 6, **extra) -> TrainConfig:
    return TrainConfig(**{"out_dir": str(out), "preset": "tiny", "seed": 0,
                          "data": {"training": [("w", "training")], "evaluation": [("w", "evaluation")]},
                          "optim": {"steps": steps, "rows": 2, "row_len": 128, "warmup": 2, "lr": 3e-3},
                          "log_every": 1, "checkpoint_every": 100, "snapshots": [0.5], **extra})


@pytest.fixture()
def teacher_dir(tmp_path, monkeypatch) -> Path:
    small_world(monkeypatch)
    train(config(tmp_path / "teacher", steps=40, optim={"steps": 40, "rows": 2, "row_len": 128, "warmup": 2,
                                                        "lr": 1e-2}))
    return tmp_path / "teacher"


def rows(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


def test_student_learns_from_the_teacher_through_the_product_trainer(teacher_dir: Path, tmp_path: Path) -> None:
    before = {k: v.clone() for k, v in load_file(teacher_dir / "train_state" / "weights.safetensors").items()}
    # The task term at weight 0 is logged but not trained: the student learns from the teacher alone.
    cfg = config(tmp_path / "student", steps=40, model=STUDENT, teacher={"kind": "sage", "path": str(teacher_dir)},
                 losses=[{"name": "task", "weight": 0.0}, *KD[1:]])
    train(cfg)
    log = rows(tmp_path / "student")
    assert {"task", "logit", "feature", "on_policy", "on_policy_valid"} <= set(log[0])
    first, last = ({k: sum(r[k] for r in part) / len(part) for k in ("logit", "task", "feature")}
                   for part in (log[:4], log[-4:]))
    assert last["logit"] < 0.5 * first["logit"]
    assert last["task"] < first["task"] - 0.1  # the teacher alone teaches the task
    assert first["feature"] < 5  # normalised: cannot swamp the task loss
    assert any(r["on_policy"] > 0 for r in log[::2])  # generated rows scored on the steps that generate
    # once the student has answered in grids, the last on-policy value is logged on every row after
    first_valid = next(i for i, r in enumerate(log) if "on_policy_last" in r)
    assert all(r["on_policy_last"] > 0 for r in log[first_valid:])
    # the teacher is untouched, and nothing of it is in the student's checkpoint; the projector is
    after = load_file(teacher_dir / "train_state" / "weights.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
    student, _ = load_model(tmp_path / "student")
    weights = load_file(tmp_path / "student" / "train_state" / "weights.safetensors")
    assert set(weights) == set(student.state_dict()) and weights["head.weight"].shape[1] == STUDENT["hidden"]
    extra = load_file(tmp_path / "student" / "train_state" / "extra.safetensors")
    assert extra["terms.feature.proj.weight"].shape == (64, STUDENT["hidden"])  # tiny teacher: hidden 64
    run = json.loads((tmp_path / "student" / "run.json").read_text())
    assert run["parameters"]["teacher_shared"] > run["parameters"]["shared"]


def test_distillation_resumes_to_the_unbroken_run(teacher_dir: Path, tmp_path: Path) -> None:
    kw = dict(model=STUDENT, teacher={"kind": "sage", "path": str(teacher_dir)}, losses=KD)
    build(config(tmp_path / "a", **kw))[1].fit()
    build(config(tmp_path / "b", max_minutes=1e-9, **kw))[1].fit()
    build(config(tmp_path / "b", **kw), resume=True)[1].fit()
    for name in ("weights", "ema", "extra"):
        a = load_file(tmp_path / "a" / "train_state" / f"{name}.safetensors")
        b = load_file(tmp_path / "b" / "train_state" / f"{name}.safetensors")
        assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a), name
    with pytest.raises(SageError, match=r"other settings \(losses\)"):
        build(config(tmp_path / "b", **{**kw, "losses": KD[:2]}), resume=True)
    lighter = [KD[0], {**KD[1], "weight": 0.5}, *KD[2:]]
    with pytest.raises(SageError, match=r"other settings \(losses\)"):
        build(config(tmp_path / "b", **{**kw, "losses": lighter}), resume=True)
    _, loop = build(config(tmp_path / "b", **{**kw, "losses": lighter}), resume=True, allow_changes=True)
    assert loop.step == 6  # told to, it resumes with the changed weight


@pytest.mark.parametrize("change, where", [
    ({"teacher": {"kind": "sage", "path": "/nonexistent/teacher"}}, "teacher.path"),
    ({"teacher": None}, "teacher"),  # logit / feature / on_policy without a teacher
    ({"losses": [{"name": "task"}]}, "teacher"),  # a teacher no loss reads
    ({"losses": [{"name": "task"}, {"name": "feature", "projector": False}]}, "losses.1"),  # 32 vs 64, no projector
    ({"losses": [{"name": "task"}, {"name": "logit", "temprature": 2}]}, "losses.1"),
    ({"teacher": {"kind": "policy", "path": "x"}}, "teacher.kind"),
])
def test_bad_teacher_configs_are_refused_before_anything_is_written(teacher_dir: Path, tmp_path: Path, change: dict,
                                                                     where: str) -> None:
    path = tmp_path / "kd.yaml"
    base = {"teacher": {"kind": "sage", "path": str(teacher_dir)}, "losses": KD, **change}
    cfg = config(tmp_path / "out", model=STUDENT, **base)
    path.write_text(json.dumps(cfg.model_dump(mode="json")))
    with pytest.raises(SageError, match=rf"{path}: {where}"):
        train(load_config(path), config_file=path)
    assert not (tmp_path / "out").exists()


def test_losses_in_yaml_are_validated_with_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("preset: tiny\nlosses:\n  - {name: task}\n  - {name: halting}\n")
    with pytest.raises(SageError, match=r"c.yaml: losses.1: unknown loss 'halting'"):
        load_config(path)
    path.write_text("preset: tiny\nteacher: {kind: sage}\nlosses: [{name: task}, {name: logit}]\n")
    with pytest.raises(SageError, match=r"c.yaml: teacher.path"):
        load_config(path)


def test_groot_store_teacher_end_to_end(tmp_path: Path, monkeypatch) -> None:
    """A GR00T checkpoint (tiny, written by this test) -> `extract` into a feature store -> a student trained
    with teacher {kind: store} and a feature loss; a store that misses training inputs is refused first."""
    from sage_distill.teachers.extract import extract
    from sage_distill.teachers.groot import GrootArch, GrootBackbone, GrootTeacher, placeholder_text_ids
    from sage_distill.teachers.groot_checkpoint import load_groot, save_groot

    world = small_world(monkeypatch)
    torch.manual_seed(0)
    save_groot(GrootBackbone(GrootArch.tiny()), tmp_path / "groot")
    groot = GrootTeacher(load_groot(tmp_path / "groot", GrootArch.tiny())[0], placeholder_text_ids)
    source = {"weights": "tiny", "dataset": "w", "split": "training+evaluation"}
    tasks = world["training"] + world["evaluation"]
    extract(groot, tasks, tmp_path / "store", source=source, pool="2x2", batch_size=8, progress=False)
    kw = dict(model=STUDENT, teacher={"kind": "store", "path": str(tmp_path / "store")},
              losses=[{"name": "task"}, {"name": "feature", "weight": 1.0, "mse": 1.0, "cosine": 0.5}])
    train(config(tmp_path / "student", steps=30, **kw))
    log = rows(tmp_path / "student")
    assert log[-1]["feature"] < 0.8 * log[0]["feature"] and log[-1]["task"] < log[0]["task"]
    assert (tmp_path / "student" / "train_state" / "extra.safetensors").stat().st_size > 0  # the projector
    # a store of the training tasks only: the evaluation tasks' demonstration inputs have no row
    extract(groot, world["training"], tmp_path / "part", source=source, pool="2x2", batch_size=8, progress=False)
    part = {**kw, "teacher": {"kind": "store", "path": str(tmp_path / "part")}}
    with pytest.raises(SageError, match=r"teacher.path: .*no row for \d+ of the run's \d+ training inputs"):
        train(config(tmp_path / "refused", **part))
    assert not (tmp_path / "refused").exists()
    logit = {**kw, "losses": [{"name": "task"}, {"name": "logit"}]}
    with pytest.raises(SageError, match="store teacher gives features only"):
        train(config(tmp_path / "refused", **logit))
