"""`robot dagger` on real Meta-World, tiny: one task, two rollouts a round, a state policy of a few hundred
weights trained a few steps. What is checked: each round appends exactly the states the student visited
(replayed independently), labelled with the teacher's action on each; beta 1 executes the teacher; a run
killed mid-rollout and mid-training resumes to the unbroken run's dataset and weights; other settings are
refused with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("metaworld")

from sage_distill.errors import SageError  # noqa: E402
from sage_distill.robot import dagger as dg  # noqa: E402
from sage_distill.robot.collect import collect  # noqa: E402
from sage_distill.robot.datasets import open_dataset  # noqa: E402
from sage_distill.robot.envs import HELDOUT_SEED0, MT10, EnvPool, MetaWorldEnv, Variant, all_tasks  # noqa: E402
from sage_distill.robot.evaluate import run_episodes  # noqa: E402
from sage_distill.robot.policies.sage_control import ControlPolicy  # noqa: E402
from sage_distill.robot.teacher import MetaWorldExpert  # noqa: E402
from sage_distill.robot.train import RobotFamily, control_config, load_policy, save_policy  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TASK = "reach-v3"
TINY = dict(obs="state", steps=4, batch=16, width=16, depth=1, chunk=4, n_action_steps=4, flow_steps=2, warmup=1,
            save_every=2, log_every=2)


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two expert demonstrations of reach-v3, state only."""
    out = tmp_path_factory.mktemp("dagger") / "start"
    assert collect(out, [TASK], 2, image_size=None)["demos"] == 2
    return out


def config(data: Path, out: Path, **dagger) -> dg.RobotDaggerConfig:
    return dg.RobotDaggerConfig(data=data, out=out, **TINY, dagger={"rounds": 1, "episodes_per_task": 2, **dagger})


def episodes(run: Path, r: int) -> list:
    ds = open_dataset(run / dg.DATA)
    return [(e, ds.frames(e.index)) for e in ds.episodes if e.extra.get("dagger_round") == r]


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def replay(student: ControlPolicy, variants: list[Variant]) -> tuple[dict[int, list], dict[int, tuple[bool, int]]]:
    """The states each episode visits under the student alone, and its (success, steps)."""
    visited: dict[int, list] = {i: [] for i in range(len(variants))}
    ends: dict[int, tuple[bool, int]] = {}

    def see(ids, obs, actions):
        for i, o in zip(ids, obs, strict=True):
            visited[i].append(o["state"])
        return actions

    with EnvPool() as pool:
        run_episodes(student, variants, pool, torch.device("cpu"), on_step=see,
                     on_done=lambda i, ok, n, _f: ends.__setitem__(i, (ok, n)))
    return visited, ends


def test_a_round_appends_the_students_states_labelled_by_the_teacher(start: Path, tmp_path: Path) -> None:
    before = files(start)
    cfg = config(start, tmp_path / "run", rounds=2)
    rows = dg.dagger(cfg)
    assert files(start) == before  # the starting dataset is read, never written
    assert [r["round"] for r in rows] == [0, 1, 2] and rows[0]["dataset_episodes"] == 2
    logged = [json.loads(x) for x in (cfg.out / dg.LOG_FILE).read_text().splitlines()]
    assert logged == rows
    expert, index = MetaWorldExpert(), all_tasks().index(TASK)
    for r in (1, 2):
        eps = episodes(cfg.out, r)
        variants = [Variant(TASK, "train", e.extra["seed"]) for e, _ in eps]
        assert sorted(v.seed for v in variants) == [dg.DAGGER_SEED0 + 2 * (r - 1) + k for k in range(2)]
        assert all(e.extra["variant"] == "train" for e, _ in eps) and max(v.seed for v in variants) < HELDOUT_SEED0
        # Replay round r-1's student on the same variants: the dataset holds exactly the states it visited.
        visited, ends = replay(load_policy(cfg.out / f"round-{r - 1:03d}")[0], variants)
        for i, (e, frames) in enumerate(eps):
            assert e.length == ends[i][1] == len(visited[i]) and e.extra["success"] == ends[i][0]
            np.testing.assert_array_equal(frames["observation.environment_state"], np.stack(visited[i]))
            np.testing.assert_array_equal(frames["observation.state"], np.stack(visited[i])[:, :4])
            # every label is the teacher's action on that state
            labels = expert.act([{"state": s, "task_index": index} for s in frames["observation.environment_state"]])
            np.testing.assert_array_equal(frames["action"], labels)
        added = sum(n for _, n in ends.values())
        assert rows[r]["frames_added"] == added and rows[r]["episodes"] == 2
        assert rows[r]["dataset_frames"] == rows[r - 1]["dataset_frames"] + added
        assert rows[r]["dataset_episodes"] == rows[r - 1]["dataset_episodes"] + 2
        assert rows[r]["rollout_success"] == np.mean([ok for ok, _ in ends.values()])
    # each round's training starts from the previous round's student (weights and normalisers)
    r1 = dg.round_config(cfg, 1)
    assert r1.init == cfg.out / "round-000" and r1.steps == cfg.steps
    family = RobotFamily(r1.model_copy(update={"out": tmp_path / "unused"}))
    for k, v in load_policy(cfg.out / "round-000")[0].state_dict().items():
        assert torch.equal(family.model.state_dict()[k], v), k
    saved = json.loads((cfg.out / "round-001" / "train_state" / "state.json").read_text())
    assert saved["settings"]["init"] == str((cfg.out / "round-000").resolve()) and saved["step"] == cfg.steps


def test_beta_one_executes_the_teacher_from_a_given_start(start: Path, tmp_path: Path) -> None:
    """With beta 1 every executed action is the teacher's: the appended episodes are the expert's own
    trajectories, to its first success. The start is a policy folder, so round 0 trains nothing."""
    torch.manual_seed(0)
    mcfg = control_config(config(start, tmp_path / "x"), None)
    save_policy(tmp_path / "pol", ControlPolicy(mcfg).state_dict(), mcfg, [TASK])
    cfg = config(start, tmp_path / "run", beta=1.0, start=tmp_path / "pol")
    rows = dg.dagger(cfg)
    assert rows[0]["steps"] == 0 and not (cfg.out / "round-000").exists()
    assert rows[1]["rollout_success"] == 1.0 and rows[1]["beta"] == 1.0
    expert = MetaWorldExpert()
    for e, frames in episodes(cfg.out, 1):
        env = MetaWorldEnv(TASK)
        o, states, ok = env.reset(Variant(TASK, "train", e.extra["seed"])), [], False
        while not ok:
            states.append(o["state"])
            o, ok, out_of_time = env.step(expert.act([o], [TASK])[0])
            assert not out_of_time
        np.testing.assert_array_equal(frames["observation.environment_state"], np.stack(states))


def test_a_policy_folder_teaches_through_the_same_protocol(start: Path, tmp_path: Path) -> None:
    """teacher.path a policy folder: every label is that policy's first action from zero noise on the state
    (and the proprio one step earlier) the student visited."""
    torch.manual_seed(1)
    mcfg = control_config(config(start, tmp_path / "x"), None)
    for name in ("student", "teacher"):
        model = ControlPolicy(mcfg)
        with torch.no_grad():  # FiLM starts at zero, so a fresh policy's chunk ignores its input: perturb all
            for w in model.parameters():
                w.add_(0.3 * torch.randn_like(w))
        save_policy(tmp_path / name, model.state_dict(), mcfg, [TASK])
    cfg = dg.RobotDaggerConfig(data=start, out=tmp_path / "run", **TINY, teacher={"path": str(tmp_path / "teacher")},
                               dagger={"rounds": 1, "episodes_per_task": 1, "start": tmp_path / "student"})
    dg.dagger(cfg)
    teacher = dg.PolicyTeacher(tmp_path / "teacher")
    assert isinstance(teacher, dg.ControlTeacher)
    [(e, frames)] = episodes(cfg.out, 1)
    pos, index = frames["observation.state"], all_tasks().index(TASK)
    shown = [{"agent_pos": p, "prev_agent_pos": pos[max(t - 1, 0)], "state": s, "task_index": index}
             for t, (p, s) in enumerate(zip(pos, frames["observation.environment_state"], strict=True))]
    labels = teacher.act(shown)
    np.testing.assert_allclose(frames["action"], labels, atol=1e-5)
    assert labels.std(0).max() > 1e-2  # the labels follow the states
    assert np.abs(labels - teacher.act([{**o, "prev_agent_pos": o["agent_pos"]} for o in shown])).max() > 1e-3


def test_a_killed_run_resumes_to_the_unbroken_one(start: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the first rollout wave of round 1, then in round 1's training after its step-2 checkpoint,
    then after its training but before the round was recorded: the same episodes, once each, the same rows
    and the same weights as an unbroken run."""
    whole = dg.dagger(config(start, tmp_path / "a", parallel=1))
    cfg = config(start, tmp_path / "b", parallel=1)

    real = dg.run_episodes
    calls = []

    def second_wave_killed(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(dg, "run_episodes", second_wave_killed)
    with pytest.raises(KeyboardInterrupt):
        dg.dagger(cfg)
    assert [e.extra["seed"] for e, _ in episodes(cfg.out, 1)] == [dg.DAGGER_SEED0]  # the first wave only
    monkeypatch.setattr(dg, "run_episodes", real)

    batch = RobotFamily.batch

    def killed_at_step_3(self, step):
        if step == 3 and self.cfg.out.name == "round-001":
            raise KeyboardInterrupt
        return batch(self, step)

    monkeypatch.setattr(RobotFamily, "batch", killed_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        dg.dagger(cfg)
    monkeypatch.setattr(RobotFamily, "batch", batch)
    assert json.loads((cfg.out / "round-001" / "train_state" / "state.json").read_text())["step"] == 2
    resumed = dg.dagger(cfg)
    # a kill between the round's end and its record: the rerun records it, adding nothing
    state = json.loads((cfg.out / dg.STATE_FILE).read_text())
    (cfg.out / dg.STATE_FILE).write_text(json.dumps({**state, "rounds": state["rounds"][:1]}))
    again = dg.dagger(cfg)
    for rows in (resumed, again):
        assert rows == whole
    a, b = episodes(tmp_path / "a", 1), episodes(cfg.out, 1)
    assert [(e.extra["seed"], e.length) for e, _ in a] == [(e.extra["seed"], e.length) for e, _ in b]
    assert open_dataset(cfg.out / dg.DATA).num_frames == whole[-1]["dataset_frames"]
    for (_, fa), (_, fb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(fa["action"], fb["action"])
    wa, wb = (load_policy(p / "round-001")[0].state_dict() for p in (tmp_path / "a", cfg.out))
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6), k


def test_other_settings_are_refused_and_more_rounds_extend(start: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "run"
    (tmp_path / "c.yaml").write_text(json.dumps({**TINY, "dagger": {"parallel": 1}}))
    args = ["robot", "dagger", "--data", start, "--out", out, "--config", tmp_path / "c.yaml", "--episodes", "1"]
    code, stdout, err = cli(*args, "--rounds", "1")
    assert code == 0 and "DAgger rounds 0..1" in stdout, err
    before = files(out)
    for extra, field in [(["--episodes", "2"], "dagger.episodes_per_task"), (["--steps", "5"], "steps"),
                         (["--policy", out / "round-000"], "dagger.start")]:
        code, _, err = cli(*args[:-2], *extra)
        assert code == 2 and err.count("\n") == 1 and field in err and "other settings" in err, err
        assert files(out) == before
    with pytest.raises(SageError, match=r"other settings \(dagger.beta\)"):
        dg.check_dagger(dg.RobotDaggerConfig(data=start, out=out, **TINY,
                                             dagger={"parallel": 1, "episodes_per_task": 1, "beta": 0.5}))
    rows = dg.dagger(dg.RobotDaggerConfig(data=start, out=out, **TINY,
                                          dagger={"parallel": 1, "episodes_per_task": 1, "rounds": 2}))
    assert [r["round"] for r in rows] == [0, 1, 2] and rows[2]["dataset_episodes"] == 4
    assert [e.extra["seed"] for e, _ in episodes(out, 2)] == [dg.DAGGER_SEED0 + 1]


def test_the_gpu_config_is_the_pixel_recipe_plus_rounds() -> None:
    """configs/robot-dagger.yaml loads, and its model and optimiser are configs/robot-pixels.yaml's, so that
    DAgger and behaviour cloning alone compare the same student."""
    import yaml

    from sage_distill.utils.config import load_config

    root = Path(__file__).resolve().parent.parent / "configs"
    cfg = load_config(dg.RobotDaggerConfig, root / "robot-dagger.yaml", base={"data": "d", "out": "o"})
    pixels = yaml.safe_load((root / "robot-pixels.yaml").read_text())
    assert {k: getattr(cfg, k) for k in pixels} == pixels
    assert cfg.teacher.path == dg.EXPERT and cfg.dagger.beta == 0 and cfg.tasks == list(MT10)
