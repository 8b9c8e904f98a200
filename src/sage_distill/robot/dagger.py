"""On-policy distillation of the control policy (DAgger, Ross et al. 2011), in rounds.

Round 0 is behaviour cloning on the starting dataset (`robot collect`), or a given policy folder
(`dagger.start`). Round r >= 1 rolls round r-1's student out on `episodes_per_task` fresh *train* variants
per task (seeds DAGGER_SEED0 + ..., never a held-out position); at every visited state the teacher's action
is the label, and the action executed is the student's, or with probability beta_r = beta * beta_decay**(r-1)
per step the teacher's (beta 0, the default, is pure DAgger: the states are the student's own). The
labelled episodes are appended to the run's copy of the dataset (LeRobot v3.0, the same features, so the
trainer reads them like demonstrations), and the student trains on the whole dataset through the one
training loop, starting from round r-1's weights (`RobotTrainConfig.init`), `steps` steps on a new schedule.

Resumable by round: `dagger_state.json` (written first; it marks the folder as a DAgger run's) holds the
settings and one row per finished round; `rounds.jsonl` is those rows. A round's episodes carry
`dagger_round` and their seed in the dataset's episode metadata and are committed a wave at a time, so a
resumed round runs only the episodes not on disk; its training resumes from its own checkpoint (the loop's).
A resume with other settings is refused; `dagger.rounds` (to extend a run), `dagger.workers`, the device and
the logging intervals may change.
"""

from __future__ import annotations

import json
import logging
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator

from ..errors import SageError
from ..training.config import TeacherSection
from ..utils.config import Strict
from ..utils.io import atomic_write_json, atomic_write_text, read_json
from .collect import FPS, IMAGE_KEY, features
from .datasets import LeRobotWriter, open_dataset, pick_codec
from .envs import HELDOUT_SEED0, EnvPool, Variant, all_tasks
from .evaluate import policy_batch, policy_hash, run_episodes
from .teacher import ControlTeacher, MetaWorldExpert
from .train import RobotTrainConfig, build, check_init, check_resume_state, control_config, load_policy

log = logging.getLogger(__name__)
EXPERT = MetaWorldExpert.name  # teacher.path naming Meta-World's scripted experts rather than a folder
# Round r's episode k of a task has train seed DAGGER_SEED0 + (r-1)*episodes_per_task + k: above collect's
# seeds (< 3 * MAX_EPISODES), below the held-out ones (HELDOUT_SEED0 on), and a pure function of (r, k).
DAGGER_SEED0 = 500_000
STATE_FILE, LOG_FILE, DATA = "dagger_state.json", "rounds.jsonl", "data"
# Settings a resume may change: how many rounds, and where and how fast, not what is learned.
FREE_ON_RESUME = {"dagger.rounds", "dagger.workers", "device", "log_every", "save_every"}


class ControlTeacherSection(TeacherSection):
    """`teacher:` as in the distillation configs, for robots: kind `policy`; `path` a control policy folder
    (`robot train`, e.g. a privileged state policy) or `metaworld-expert` (the scripted experts)."""

    kind: Literal["policy"] = "policy"
    path: str = Field(EXPERT, min_length=1)

    @model_validator(mode="after")
    def _policy_options(self) -> ControlTeacherSection:
        if self.tokenizer is not None or self.layer is not None or self.pool != "grid":
            raise ValueError("tokenizer, layer and pool are options of hf and groot teachers; a policy teacher "
                             "takes a path")
        return self


class DaggerSection(Strict):
    rounds: int = Field(3, ge=1, le=100)
    episodes_per_task: int = Field(10, ge=1, le=10_000)  # student rollouts per task and round
    beta: float = Field(0.0, ge=0, le=1, allow_inf_nan=False)  # round 1's chance that a step runs the teacher's action
    beta_decay: float = Field(1.0, ge=0, le=1, allow_inf_nan=False)  # beta_r = beta * beta_decay**(r-1)
    first_steps: int | None = Field(None, ge=1, le=10_000_000)  # round 0's steps (default: steps)
    start: Path | None = None  # a policy folder (`robot train`) as round 0, instead of training one
    workers: int = Field(0, ge=0, le=64)  # simulator processes
    parallel: int = Field(500, ge=1, le=10_000)  # episodes rolled out at once; each wave is one dataset flush

    def beta_of(self, r: int) -> float:
        return self.beta * self.beta_decay ** (r - 1)

    @model_validator(mode="after")
    def _seeds(self) -> DaggerSection:
        if DAGGER_SEED0 + self.rounds * self.episodes_per_task > HELDOUT_SEED0:
            raise ValueError(f"rounds x episodes_per_task must stay <= {HELDOUT_SEED0 - DAGGER_SEED0} (the train "
                             "seeds left below the held-out ones)")
        return self


# Training settings a DAgger config leaves out, and why.
NOT_PER_ROUND = {
    "minutes": "every round trains `steps` steps (dagger.first_steps in round 0); a killed run resumes",
    "max_minutes": "every round trains `steps` steps (dagger.first_steps in round 0); a killed run resumes",
    "init": "each round starts from the previous round's student; start from a policy folder with dagger.start",
    "episodes_per_task": "it would drop the rounds' episodes: every round trains on the whole dataset "
                         "(dagger.episodes_per_task sets the rollouts)"}


class RobotDaggerConfig(RobotTrainConfig):
    """A robot training config (each round's training) plus `teacher:` and `dagger:`."""

    teacher: ControlTeacherSection = Field(default_factory=ControlTeacherSection)
    dagger: DaggerSection = Field(default_factory=DaggerSection)

    @field_validator(*NOT_PER_ROUND)
    @classmethod
    def _not_per_round(cls, v: object, info: ValidationInfo) -> object:
        if v is not None:
            raise ValueError(f"not a DAgger setting: {NOT_PER_ROUND[info.field_name]}")
        return v


class PolicyTeacher:
    """A control policy folder as the teacher: a state's label is the first action of the chunk the policy
    samples from zero noise, so the same state always gets the same label."""

    name = "policy"

    def __init__(self, folder: Path, device: str = "cpu") -> None:
        self.policy, self.tasks = load_policy(folder, device)
        self.device = torch.device(device)

    def act(self, observations: list[dict[str, np.ndarray]]) -> np.ndarray:
        prev = [o.get("prev_agent_pos", o["agent_pos"]) for o in observations]
        batch = policy_batch(self.policy, observations, prev, self.device)
        noise = torch.zeros(len(observations), self.policy.cfg.chunk, self.policy.cfg.action_dim)
        return self.policy.sample(batch, noise=noise)[:, 0].float().cpu().numpy()


def make_teacher(cfg: RobotDaggerConfig) -> ControlTeacher:
    return MetaWorldExpert() if cfg.teacher.path == EXPERT else PolicyTeacher(Path(cfg.teacher.path), cfg.device)


class Labeller:
    """`run_episodes`' on_step hook for one wave: records every visited state with the teacher's action as its
    label, and returns the actions executed (the student's; the teacher's with probability beta per step, from
    a generator per episode, so a resumed wave mixes alike)."""

    def __init__(self, wave: list[Variant], teacher: ControlTeacher, beta: float, round_: int,
                 image_size: int | None) -> None:
        self.teacher, self.beta, self.image = teacher, beta, image_size is not None
        self.frames = [{k: [] for k in features(image_size)} for _ in wave]
        self.rngs = [np.random.default_rng([round_, v.seed, zlib.crc32(v.task.encode())]) for v in wave]

    def __call__(self, ids: list[int], obs: list[dict[str, np.ndarray]], actions: np.ndarray) -> np.ndarray:
        seen = [self.frames[i]["observation.state"] for i in ids]
        shown = [{**o, "prev_agent_pos": s[-1] if s else o["agent_pos"]} for o, s in zip(obs, seen, strict=True)]
        labels = np.asarray(self.teacher.act(shown), dtype=np.float32)
        for i, o, a in zip(ids, obs, labels, strict=True):
            f = self.frames[i]
            f["observation.state"].append(o["agent_pos"])
            f["observation.environment_state"].append(o["state"])
            f["action"].append(a)
            if self.image:
                f[IMAGE_KEY].append(o["pixels"])
        teach = np.array([self.rngs[i].random() < self.beta for i in ids])
        return np.where(teach[:, None], labels, actions)

    def episode(self, i: int) -> dict[str, np.ndarray]:
        frames, self.frames[i] = self.frames[i], {}  # handed to the writer once; free the frames
        return {k: np.stack(v) for k, v in frames.items()}


# ---------------------------------------------------------------- checks (nothing written)


@dataclass
class Plan:
    tasks: list[str]
    image_size: int | None
    settings: dict
    rows: list[dict]  # the finished rounds of a run being resumed


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def read_state(out: Path) -> dict:
    path = out / STATE_FILE
    state = read_json(path)
    rounds = state.get("rounds") if isinstance(state, dict) else None
    if not (isinstance(rounds, list) and isinstance(state.get("settings"), dict)
            and all(isinstance(r, dict) and r.get("round") == i for i, r in enumerate(rounds))):
        raise SageError("expected an object with the settings and one row per finished round (0, 1, ...); "
                        "use a new --out", file=path)
    return state


def check_dagger(cfg: RobotDaggerConfig) -> Plan:
    """Everything a run needs, before anything is written: the starting dataset (one `robot collect` made),
    the tasks, the starting policy, the teacher, and --out (new, empty, or this run's to resume)."""
    ds = open_dataset(cfg.data)
    image_size = int(ds.features[IMAGE_KEY]["shape"][0]) if IMAGE_KEY in ds.features else None
    LeRobotWriter.check_resumable(cfg.data, fps=FPS, features=features(image_size))
    if image_size is not None:  # the rounds append video with this machine's encoder: one codec per dataset
        was = (ds.features[IMAGE_KEY].get("info") or {}).get("video.encoder")
        if was is not None and was != pick_codec(None):
            raise SageError(f"its videos are {was!r}, this machine writes {pick_codec(None)!r}",
                            file=cfg.data / "meta" / "info.json", where=f"features.{IMAGE_KEY}")
    if cfg.obs == "pixels" and image_size is None:
        raise SageError(f"no {IMAGE_KEY} video: collect with --image-size, or set obs: state", file=cfg.data)
    have = {e.extra.get("task_name") or e.tasks[0] for e in ds.episodes}
    tasks = list(cfg.tasks) if cfg.tasks else sorted(have & set(all_tasks()))
    absent = [t for t in tasks if t not in have]
    if absent or not tasks:
        raise SageError(f"the starting dataset {cfg.data} has no episodes of {', '.join(absent) or 'any task'}",
                        where="tasks")
    settings = {**cfg.model_dump(mode="json", exclude={"out", "data"}),
                "data": {"path": str(cfg.data.resolve()), "episodes": len(ds.episodes), "frames": ds.num_frames}}
    for what, folder in (("dagger.start", cfg.dagger.start),
                         ("teacher.path", None if cfg.teacher.path == EXPERT else Path(cfg.teacher.path))):
        if folder is None:
            continue
        if what == "dagger.start":
            policy, trained = check_init(folder, control_config(cfg, image_size))
        else:
            policy, trained = load_policy(folder)
            if policy.cfg.obs == "pixels" and policy.cfg.image_size != image_size:
                raise SageError(f"a pixel teacher of {policy.cfg.image_size} px; the dataset's frames are "
                                f"{image_size or 'not rendered'}", where=what)
        missing = [t for t in tasks if trained and t not in trained]
        if missing:
            raise SageError(f"the policy {folder} was not trained on {', '.join(missing)}", where=what)
        settings[f"{what}.sha256"] = policy_hash(folder)
    rows: list[dict] = []
    if (cfg.out / STATE_FILE).is_file():
        saved = read_state(cfg.out)
        mine, was = _flat(json.loads(json.dumps(settings))), _flat(saved["settings"])
        differ = sorted(k for k in mine.keys() | was.keys() if k not in FREE_ON_RESUME and mine.get(k) != was.get(k))
        if differ:
            raise SageError(f"the DAgger run in {cfg.out} was started with other settings ({', '.join(differ)}); "
                            "give the same ones, or another --out", where="--out")
        rows = saved["rounds"]
        if (cfg.out / DATA).is_dir():
            open_dataset(cfg.out / DATA)
    elif cfg.out.is_dir() and any(cfg.out.iterdir()):
        raise SageError(f"{cfg.out} exists, is not empty and is not a DAgger run (no {STATE_FILE}); give a new or "
                        "empty folder", where="--out")
    return Plan(tasks, image_size, settings, rows)


# ---------------------------------------------------------------- the rounds


def round_dir(out: Path, r: int) -> Path:
    return out / f"round-{r:03d}"


def policy_of(cfg: RobotDaggerConfig, r: int) -> Path:
    """Round r's student: its training folder, or the given start for round 0."""
    return cfg.dagger.start if r == 0 and cfg.dagger.start is not None else round_dir(cfg.out, r)


def round_config(cfg: RobotDaggerConfig, r: int) -> RobotTrainConfig:
    """Round r's training: the whole dataset so far, continuing from round r-1's student."""
    base = cfg.model_dump(exclude={"teacher", "dagger"})
    steps = (cfg.dagger.first_steps or cfg.steps) if r == 0 else cfg.steps
    return RobotTrainConfig(**{**base, "data": cfg.out / DATA, "out": round_dir(cfg.out, r), "steps": steps,
                               "init": policy_of(cfg, r - 1) if r > 0 else None})


def _copy_dataset(src: Path, dst: Path) -> None:
    """The starting dataset's LeRobot files into the run (the rounds append there, never to the source),
    through a partial folder renamed at the end: a kill mid-copy leaves no half dataset."""
    tmp = dst.with_name(f".{dst.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)  # ours: an earlier copy cut short
    tmp.mkdir()
    for part in ("meta", "data", "videos"):
        if (src / part).is_dir():
            shutil.copytree(src / part, tmp / part)
    tmp.rename(dst)


def label_round(cfg: RobotDaggerConfig, plan: Plan, r: int, teacher: ControlTeacher, pool: EnvPool) -> dict:
    """Round r's rollouts of round r-1's student, labelled and appended; the round's figures are read back
    from the dataset, so that a resumed round counts what an earlier process wrote."""
    n, beta = cfg.dagger.episodes_per_task, cfg.dagger.beta_of(r)
    seeds = range(DAGGER_SEED0 + (r - 1) * n, DAGGER_SEED0 + r * n)
    variants = [Variant(t, "train", s) for t in plan.tasks for s in seeds]
    writer = LeRobotWriter(cfg.out / DATA, fps=FPS, robot_type="sawyer", features=features(plan.image_size),
                           episodes_per_file=cfg.dagger.parallel)

    def this_round() -> list:
        return [e for e in writer.done() if e.extra.get("dagger_round") == r]

    done = {(e.extra.get("task_name"), e.extra.get("seed")) for e in this_round()}
    todo = [v for v in variants if (v.task, v.seed) not in done]
    if todo:
        student, _ = load_policy(policy_of(cfg, r - 1), cfg.device)
        for start in range(0, len(todo), cfg.dagger.parallel):
            wave = todo[start: start + cfg.dagger.parallel]
            labeller = Labeller(wave, teacher, beta, r, plan.image_size)

            def finished(i: int, ok: bool, steps: int, _frames, wave=wave, labeller=labeller) -> None:
                v = wave[i]
                writer.add_episode(labeller.episode(i), task=v.task, extra={
                    "task_name": v.task, "seed": v.seed, "variant": "train", "dagger_round": r, "beta": beta,
                    "success": bool(ok), "teacher": teacher.name})

            run_episodes(student, wave, pool, torch.device(cfg.device), on_done=finished, on_step=labeller)
            writer.flush()  # the wave's commit: a kill after it resumes with the next wave
    writer.close()
    eps = this_round()
    per_task = {t: float(np.mean([e.extra["success"] for e in eps if e.extra["task_name"] == t])) for t in plan.tasks}
    return {"beta": beta, "episodes": len(eps), "frames_added": sum(e.length for e in eps),
            "rollout_success": float(np.mean([e.extra["success"] for e in eps])), "per_task": per_task}


def _last_metrics(folder: Path) -> dict:
    path = folder / "metrics.jsonl"
    rows = path.read_text().splitlines() if path.is_file() else []
    return json.loads(rows[-1]) if rows else {}


def run_round(cfg: RobotDaggerConfig, plan: Plan, r: int, teacher: ControlTeacher, pool: EnvPool | None) -> dict:
    row: dict = {"round": r}
    if r > 0:
        row |= label_round(cfg, plan, r, teacher, pool)
    if r == 0 and cfg.dagger.start is not None:
        row |= {"policy": str(cfg.dagger.start), "steps": 0}
    else:
        tcfg = round_config(cfg, r)
        check_resume_state(tcfg.out)
        _, loop = build(tcfg)
        last = loop.fit() or _last_metrics(tcfg.out)  # {} when a resume finds the round's training done
        row |= {"policy": tcfg.out.name, "steps": loop.step, "loss": last.get("loss")}
    info = read_json(cfg.out / DATA / "meta" / "info.json")
    row |= {"dataset_episodes": info["total_episodes"], "dataset_frames": info["total_frames"]}
    log.info("round %d: %s", r, json.dumps(row))
    return row


def _save_state(out: Path, settings: dict, rows: list[dict]) -> None:
    """The state first, then the log rebuilt from it: a kill between the two leaves the log one row short,
    and the next start rewrites it."""
    atomic_write_json(out / STATE_FILE, {"settings": settings, "rounds": rows}, indent=1)
    atomic_write_text(out / LOG_FILE, "".join(json.dumps(row) + "\n" for row in rows))


def dagger(cfg: RobotDaggerConfig) -> list[dict]:
    """Run (or resume) rounds 0..dagger.rounds in cfg.out; returns one row per round."""
    plan = check_dagger(cfg)
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    rows = list(plan.rows)
    _save_state(out, plan.settings, rows)  # first: it marks the folder as a DAgger run's
    if not (out / DATA).is_dir():
        _copy_dataset(cfg.data, out / DATA)
    teacher = make_teacher(cfg)
    pool = None
    try:
        for r in range(len(rows), cfg.dagger.rounds + 1):
            if r > 0 and pool is None:
                pool = EnvPool(image_size=plan.image_size, workers=cfg.dagger.workers)
            rows.append(run_round(cfg, plan, r, teacher, pool))
            _save_state(out, plan.settings, rows)
    finally:
        if pool is not None:
            pool.close()
    return rows
