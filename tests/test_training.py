"""The training loop: it learns, it logs, a killed run resumed gives the uninterrupted result, and
bad configs are refused before anything is written."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from arc_world import small_world
from sage_distill.errors import SageError
from sage_distill.training.config import TrainConfig, load_config
from sage_distill.training.loop import LoopSettings, schedule_factor
from sage_distill.training.train import build, train


def fit(cfg: TrainConfig, resume: bool = False) -> dict:
    return build(cfg, resume=resume)[1].fit()


def tiny_config(out, steps: int = 6, **extra) -> TrainConfig:
    return TrainConfig(**{"out_dir": str(out), "preset": "tiny",
                          "data": {"training": [("w", "training")], "evaluation": [("w", "evaluation")]},
                          "optim": {"steps": steps, "rows": 2, "row_len": 128, "warmup": 2, "lr": 3e-3},
                          "log_every": 1, "checkpoint_every": 100, "snapshots": [0.5], **extra})


def test_schedule_warms_up_holds_then_decays_to_zero() -> None:
    s = LoopSettings(out="x", steps=100, warmup=2, decay_fraction=0.2)
    f = [schedule_factor(s, step, step / 100) for step in range(101)]
    assert f[0] == 0.5 and f[1] == f[50] == f[79] == 1.0 and f[90] == pytest.approx(0.5) and f[100] == 0.0
    cos = LoopSettings(out="x", steps=100, schedule="cosine")
    assert schedule_factor(cos, 0, 0.0) == 1.0 and schedule_factor(cos, 50, 0.5) == pytest.approx(0.5)
    # on the wall clock: the factor follows the fraction of the minutes spent, whatever the step
    timed = LoopSettings(out="x", steps=10**9, warmup=0, decay_fraction=0.5, minutes=10)
    assert schedule_factor(timed, 123, 0.75) == pytest.approx(0.5)


def test_resume_after_a_kill_continues_the_same_run(tmp_path, monkeypatch) -> None:
    small_world(monkeypatch)
    straight = fit(tiny_config(tmp_path / "a"))
    # max_minutes stops (with a checkpoint) after the first step, as a kill after a checkpoint would.
    fit(tiny_config(tmp_path / "b", max_minutes=1e-9))
    assert json.loads((tmp_path / "b" / "train_state" / "state.json").read_text())["step"] == 1
    resumed = fit(tiny_config(tmp_path / "b"), resume=True)
    assert resumed["step"] == straight["step"] == 6
    for name in ("weights", "ema"):
        a = load_file(tmp_path / "a" / "train_state" / f"{name}.safetensors")
        b = load_file(tmp_path / "b" / "train_state" / f"{name}.safetensors")
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), name
    steps = [json.loads(x)["step"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) == list(range(1, 7))  # no step logged twice after the resume
    row = json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"loss", "task", "token_acc", "exact", "tokens_per_s", "mfu", "lr"} <= set(row)
    assert list((tmp_path / "a" / "tensorboard").iterdir())
    assert (tmp_path / "a" / "model.safetensors.index.json").exists()
    assert (tmp_path / "a" / "snapshots" / "step-000003" / "tasks.json").exists()


def test_training_reduces_the_loss(tmp_path, monkeypatch) -> None:
    small_world(monkeypatch)
    torch.manual_seed(0)
    fit(tiny_config(tmp_path, steps=30))
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["loss"] for r in rows[-5:]) < 0.7 * sum(r["loss"] for r in rows[:5])


def test_a_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, monkeypatch) -> None:
    small_world(monkeypatch)
    family, loop = build(tiny_config(tmp_path, steps=4, checkpoint_every=1))
    real_save = loop.save

    def save_then_break(minutes: float) -> None:  # the weights go bad right after the first checkpoint
        real_save(minutes)
        with torch.no_grad():
            family.model.head.weight.fill_(float("nan"))
    monkeypatch.setattr(loop, "save", save_then_break)
    with pytest.raises(SageError, match=r"loss is nan \(first non-finite value at step 1\).*\(step 1\) is intact"):
        loop.fit()
    assert json.loads((tmp_path / "train_state" / "state.json").read_text())["step"] == 1
    assert torch.isfinite(load_file(tmp_path / "train_state" / "weights.safetensors")["head.weight"]).all()


def test_an_existing_run_is_not_overwritten_without_resume(tmp_path, monkeypatch) -> None:
    small_world(monkeypatch)
    train(tiny_config(tmp_path, steps=1))
    with pytest.raises(SageError, match="holds a run already"):
        train(tiny_config(tmp_path, steps=1))


def test_yaml_config_overrides_and_refusals(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("preset: tiny\noptim:\n  steps: 7\n")
    cfg = load_config(path, {"optim.rows": 3, "model.loops": 2})
    assert cfg.optim.steps == 7 and cfg.optim.rows == 3 and cfg.model_config_().loops == 2
    for text, where in [("preset: tiny\noptim:\n  stepz: 7\n", "optim.stepz"), ("optim:\n  lr: -1\n", "optim.lr"),
                        ("optim:\n  steps: -5\n", "optim.steps"), ("", "is empty"),
                       ("optim: [\n", "not valid YAML"), ("- 1\n- 2\n", "mapping"),
                        ("model:\n  hidden: 8\n", "model"), ("snapshots: [1.5]\n", "snapshots")]:
        path.write_text(text)
        with pytest.raises(SageError, match=where):
            load_config(path)


def test_a_cpu_run_that_cannot_fit_is_refused_with_the_option_to_change(tmp_path, monkeypatch) -> None:
    import sage_distill.training.train as tr

    monkeypatch.setattr(tr.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(tr, "available_memory", lambda: 16.0 * 2**30)
    big = TrainConfig(out_dir=str(tmp_path / "run"), preset="large", optim={"rows": 8, "row_len": 8192})
    assert tr.cpu_memory_needed(big) > 40 * 2**30  # the README's GPU config: about 47 GiB on a CPU
    small = TrainConfig(out_dir=str(tmp_path / "run"), preset="tiny", optim={"rows": 1, "row_len": 256})
    assert tr.cpu_memory_needed(small) < 2**30
    with pytest.raises(SageError, match="optim.rows"):
        train(big)
    assert not (tmp_path / "run").exists()


def test_every_shipped_arc_config_loads_and_students_see_their_teachers_views() -> None:
    """A typo in a shipped config fails here, not on a GPU lease; a student's views must be its teacher's."""
    import json
    from pathlib import Path

    from sage_distill.training.config import load_config as load_train_config

    root = Path(__file__).parents[1]
    paths = sorted(root.glob("configs/arc*.yaml")) + sorted(root.glob("configs/distill/*.yaml"))
    assert len(paths) >= 9
    for path in paths:
        cfg = load_train_config(path)
        if cfg.teacher is not None:
            teacher = json.loads((root / cfg.teacher.path / "config.json").read_text())
            assert cfg.model_config_().palette_views == teacher.get("palette_views", False), path
            assert cfg.data.training == [("arc1", "training"), ("arc2", "training")], path
