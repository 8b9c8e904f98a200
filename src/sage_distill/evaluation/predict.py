"""`sage-distill predict`: solve every task of a challenges file (which holds no answers).

Per task: find its embedding row by the fingerprint of its demonstrations (never its id); tasks the
model has no row for get fresh rows, trained on their demonstrations for `--adapt-minutes` (all such
tasks together; with `--adapt-mode all` the shared weights too, in a copy that decodes those tasks
only). Then every test input is decoded under `--views` augmented views, batched across
tasks with a KV cache; answers are mapped back, invalid grids dropped, and voted (ties broken by
summed log-likelihood). Finished tasks are appended to `<out>.partial.jsonl` as they complete, so
a killed run loses at most the chunk of tasks in flight and a rerun resumes; `--minutes` bounds the
whole command, adaptation included, and tasks left unfinished get the copy-input answer (counted).

The partial file's first line holds the settings that shape the answers (the model's and the
challenges file's sha256, views, seed, runtime, device, adaptation): a rerun with other settings is
refused, naming them, unless `--restart` deletes the partial file first. Every answer line is
validated before it is reused; only a last line cut by a kill is dropped (that task runs again).
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from safetensors.torch import load_file
from tqdm import tqdm

from ..arc.augment import input_palette
from ..arc.datasets import load_challenges
from ..arc.task import Task, fingerprint
from ..errors import PredictionError, SageError
from ..student.checkpoint import INDEX, load_model
from ..student.generate import DRAFTS, Job, Tally, generate, rescore, view_augmentations
from ..student.modeling_sage import SageModel
from ..training.adapt import adapt_tasks, shared_parameters
from ..utils.device import check_device
from ..utils.io import atomic_save_safetensors, atomic_write_json, atomic_write_text, files_sha256
from .submission import parse_predictions


class PredictConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    views: int = Field(8, ge=1, le=1024)
    adapt_minutes: float = Field(0.0, ge=0, le=24 * 60)
    adapt_steps: int | None = Field(None, ge=1)  # a step cap besides the minutes (tests, smoke runs)
    # What adaptation trains (`training.adapt`): the unknown tasks' new rows only, or those rows and every
    # shared weight. `all` changes the weights every task is decoded with, so its copy of the model decodes
    # the unknown tasks only; the tasks the model has a row for keep the original weights (and answers).
    # `all` is the default: on the unseen protocol it scored 20.75% against 12.88% for `rows` at equal
    # minutes (docs/BENCHMARKS.md, "the ARC recipe (issue 16), run 2").
    adapt_mode: Literal["rows", "all"] = "all"
    minutes: float | None = Field(None, gt=0)
    device: Literal["cpu", "cuda"] = "cpu"
    # sequences per decoding batch; 0 picks 384 on a GPU and 16 on the CPU. 4096 already fills an H200.
    batch: int = Field(0, ge=0, le=4096)
    seed: int = Field(0, ge=0, le=2**32 - 1)  # torch and numpy both take a 32-bit seed
    runtime: Literal["torch", "onnx"] = "torch"  # onnx: graphs from `sage-distill export`, ONNX Runtime on the CPU
    # Re-score this many most-voted candidates per test input by their likelihood under every view (product
    # of experts) before the top two are chosen; 0 keeps the vote. Costs one teacher-forced pass per
    # (candidate, view): cheap on a GPU, several seconds a task on a CPU.
    rescore: int = Field(0, ge=0, le=64)
    # Tokens guessed per greedy decoding step (`student/drafts.py`); the answers are the one-token-a-step ones,
    # 0 turns the guessing off. 3 is fastest on a 2-core CPU (docs/BENCHMARKS.md, "Drafted tokens").
    drafts: int = Field(DRAFTS, ge=0, le=16)
    # Also answer from the first N views of the same decoding, for each N here (by the vote): the pass@2 vs
    # views curve from one run instead of one run per view count.
    curve: list[int] = Field(default_factory=list, max_length=16)

    @field_validator("curve")
    @classmethod
    def _curve_below_views(cls, v: list[int], info: ValidationInfo) -> list[int]:
        views = info.data.get("views", 0)
        if any(not 1 <= n < views for n in v) or len(set(v)) != len(v):
            raise ValueError(f"each view count must be distinct and between 1 and --views - 1 ({views - 1})")
        return sorted(v)

    def also(self) -> list[str]:
        """The answer sets written beside the submission (`<out stem>.<name>.json`), from the same decoding."""
        return (["votes"] if self.rescore else []) + [f"views{n}" for n in self.curve]


def check_runtime(model_dir: str | Path, cfg: PredictConfig) -> None:
    """What `--runtime onnx` refuses, before anything is written."""
    if cfg.runtime != "onnx":
        return
    from ..errors import ConfigError
    from ..student.onnx_runtime import read_manifest

    if cfg.device != "cpu":
        raise ConfigError("--runtime onnx runs on the CPU only; use --device cpu", file="--device")
    if cfg.adapt_minutes > 0:
        raise ConfigError("adaptation trains the torch model; use --runtime torch with --adapt-minutes",
                          file="--adapt-minutes")
    if cfg.rescore:
        raise ConfigError("re-scoring runs the torch model; use --runtime torch with --rescore", file="--rescore")
    read_manifest(model_dir)


def load_runner(model_dir: str | Path, cfg: PredictConfig):
    """(model or ONNX runner, fingerprints of its task rows)."""
    if cfg.runtime == "onnx":
        from ..student.onnx_runtime import OnnxSage

        runner = OnnxSage(model_dir)
        return runner, runner.fingerprints
    check_device(cfg.device)
    return load_model(model_dir, cfg.device)


# What each resume setting is called on the command line, for the refusal message.
SETTING_NAMES = {"model_sha256": "--model (its files' sha256)", "challenges_sha256": "--challenges (its sha256)",
                 "views": "--views", "seed": "--seed", "runtime": "--runtime", "device": "--device",
                 "adapt_minutes": "--adapt-minutes", "adapt_steps": "adapt_steps", "adapt_mode": "--adapt-mode",
                 "drafts": "--drafts"}
ADAPT_KEYS = ("model_sha256", "seed", "adapt_minutes", "adapt_steps", "adapt_mode")  # what an adaptation depends on


def model_sha256(model_dir: str | Path, runtime: str) -> str:
    """sha256 of every file that shapes the answers: config, task rows, index and shards (torch), or the
    manifest and graphs (onnx). Called after the folder loaded, so the files are there."""
    folder = Path(model_dir)
    if runtime == "onnx":
        from ..student.onnx_runtime import MANIFEST, read_manifest

        names = [MANIFEST, *sorted(g["file"] for g in read_manifest(folder)["graphs"].values())]
    else:
        names = ["config.json", "tasks.json", INDEX,
                 *sorted(set(json.loads((folder / INDEX).read_text())["weight_map"].values()))]
    return files_sha256(folder / n for n in names)


def resume_settings(model_dir: str | Path, cfg: PredictConfig, challenges: str | Path | None) -> dict:
    """The settings a partial answers file is bound to (without the challenges when they are not known yet)."""
    out = {"model_sha256": model_sha256(model_dir, cfg.runtime), "views": cfg.views, "seed": cfg.seed,
           "runtime": cfg.runtime, "device": cfg.device, "adapt_minutes": cfg.adapt_minutes,
           "adapt_steps": cfg.adapt_steps, "adapt_mode": cfg.adapt_mode, "rescore": cfg.rescore,
           "curve": cfg.curve, "drafts": cfg.drafts}
    if challenges is not None:
        out["challenges_sha256"] = files_sha256([challenges])
    return out


def partial_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial.jsonl")


def check_settings(path: Path, first_line: str, settings: dict) -> None:
    """The partial file's header against `settings` (each key given): one SageError naming what differs."""
    try:
        saved = json.loads(first_line).get("settings")
    except (ValueError, AttributeError):
        saved = None
    if not isinstance(saved, dict):
        raise SageError("no settings header (cut, or written by an older version); rerun with --restart to "
                        "start afresh", file=path, where="line 1")

    def short(v: object) -> str:
        return f"{v[:12]}..." if isinstance(v, str) and len(v) == 64 else json.dumps(v)

    differ = [f"{SETTING_NAMES.get(k, k)} was {short(saved.get(k))}, now {short(v)}"
              for k, v in settings.items() if saved.get(k) != v]
    if differ:
        raise SageError(f"the partial answers were made with other settings ({'; '.join(differ)}); give the same "
                        "ones, another --out, or --restart to start afresh", file=path)


def check_partial_settings(out: str | Path, settings: dict) -> None:
    """`eval`'s check before it exports: a partial answers file beside `out` was made with these settings."""
    path = partial_path(out)
    if path.is_file():
        try:
            first = path.read_text().split("\n", 1)[0]
        except (OSError, UnicodeDecodeError) as e:
            raise SageError(f"unreadable ({e}); rerun with --restart", file=path) from None
        check_settings(path, first, settings)


def read_partial(path: Path, settings: dict, tests: dict[str, int]) -> dict[str, dict]:
    """The finished tasks of a killed run ({task id: row}), every line checked: the settings header, then one
    row per task of the challenges file (`tests`: task id -> test inputs) with valid attempts. A last line
    cut by the kill is dropped, and the file rewritten without it so appends start on a fresh line."""
    try:
        lines = path.read_text().split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise SageError(f"unreadable ({e}); rerun with --restart", file=path) from None
    check_settings(path, lines[0], settings)
    done: dict[str, dict] = {}
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except ValueError:
            if n == len(lines):  # the unfinished write of a killed run: that task runs again
                atomic_write_text(path, "\n".join(lines[:-1]) + "\n")
                continue
            raise SageError("not valid JSON; rerun with --restart to start afresh", file=path,
                            where=f"line {n}") from None
        where = f"line {n}"
        names = ["task", "attempts", "views", "invalid", "seconds"]
        also = PredictConfig(views=settings["views"], rescore=settings["rescore"], curve=settings["curve"]).also()
        names += ["also"] if also else []  # the other answer sets of the same decoding
        keys = set(names)
        if not isinstance(r, dict) or set(r) != keys:
            raise SageError(f"expected an object with {', '.join(names)}", file=path, where=where)
        if also and (not isinstance(r["also"], dict) or sorted(r["also"]) != sorted(also)):
            raise SageError(f"also must hold the answer sets {', '.join(also)}", file=path, where=where)
        tid = r["task"]
        if not isinstance(tid, str) or tid not in tests:
            raise SageError(f"task {str(tid)[:40]!r} is not in the challenges file", file=path, where=where)
        if tid in done:
            raise SageError(f"task {tid} is listed twice", file=path, where=where)
        answer_sets = {"": r["attempts"], **{f"also.{k}: ": v for k, v in r.get("also", {}).items()}}
        for prefix, attempts in answer_sets.items():
            try:
                parse_predictions({tid: attempts})
            except PredictionError as e:
                raise SageError(prefix + e.one_line(), file=path, where=where) from None
        if any(len(a) != tests[tid] for a in answer_sets.values()):
            raise SageError(f"task {tid} has {tests[tid]} test inputs, the line {len(r['attempts'])} answers",
                            file=path, where=where)
        counts_ok = r["views"] == settings["views"] and _count(r["invalid"]) and r["invalid"] <= r["views"] * tests[tid]
        if not counts_ok or not _count(r["seconds"], float) or not math.isfinite(r["seconds"]):
            raise SageError("views must equal --views, invalid be a count up to views x test inputs, seconds a "
                            "finite number >= 0", file=path, where=where)
        done[tid] = r
    return done


def _count(v: object, kind: type | tuple = int) -> bool:
    """A number >= 0 of `kind` (int, or float which takes ints too), never a bool."""
    kinds = (int, float) if kind is float else kind
    return isinstance(v, kinds) and not isinstance(v, bool) and v >= 0


def _rows_for(model: SageModel, fingerprints: list[str], tasks: list[Task], cfg: PredictConfig, out: Path,
              deadline: float, settings: dict) -> tuple[dict[str, int], dict, SageModel]:
    """Embedding row per task fingerprint; adapts (or reloads the adaptation of) unknown tasks. A saved
    adaptation is reused only for the same tasks, model, seed, mode and adaptation budget. Returns too the
    model that decodes the unknown tasks: `model` itself, or with `adapt_mode` all an adapted copy (the
    known tasks keep `model`'s weights)."""
    rows = {fp: i for i, fp in enumerate(fingerprints)}
    unknown: dict[str, Task] = {}
    for t in tasks:
        fp = fingerprint(t)
        if fp not in rows:
            unknown.setdefault(fp, t)
    info = {"unknown_tasks": len(unknown), "adapted": 0}
    if not unknown:
        return rows, info, model
    if not isinstance(model, SageModel):  # ONNX graphs: the mean row, as SageModel.extend_tasks gives a new task
        rows.update({fp: model.unknown_row for fp in unknown})
        return rows, info, model
    first = model.extend_tasks(len(unknown))
    for i, fp in enumerate(unknown):
        rows[fp] = first + i
    saved = out.with_name(out.name + ".adapted.safetensors")
    meta = out.with_name(out.name + ".adapted.json")
    bound = {k: settings[k] for k in ADAPT_KEYS}
    net = copy.deepcopy(model) if cfg.adapt_mode == "all" else model
    shared = shared_parameters(net) if cfg.adapt_mode == "all" else {}
    kept = _saved_adaptation(saved, meta, list(unknown), bound, _adapted_shapes(net, first, shared))
    if kept is not None:
        state, report = kept
        with torch.no_grad():
            for name, rows_view in net.tasks.rows_from(first).items():
                rows_view.copy_(state[name])
            for name, p in shared.items():
                p.copy_(state[f"shared.{name}"])
        info["adapted"], info["adaptation"] = len(unknown), report
    elif cfg.adapt_minutes > 0:
        minutes = min(cfg.adapt_minutes, max(0.0, (deadline - time.time()) / 60))
        report = adapt_tasks(net, list(unknown.values()), first, minutes, cfg.adapt_steps, seed=cfg.seed,
                             mode=cfg.adapt_mode)
        state = {**net.tasks.rows_from(first), **{f"shared.{name}": p for name, p in shared.items()}}
        atomic_save_safetensors(saved, {k: v.detach().cpu() for k, v in state.items()})
        atomic_write_json(meta, {"fingerprints": list(unknown), "settings": bound, "report": report})
        info["adapted"], info["adaptation"] = len(unknown), report
    else:  # `all` without minutes: nothing was adapted, no copy needed
        net = model
    return rows, info, net


def _adapted_shapes(model: SageModel, first: int, shared: dict[str, torch.nn.Parameter]) -> dict[str, tuple]:
    """What an adaptation of rows first.. (and of the `shared` weights) holds: its tensors' names and shapes."""
    return {**{name: tuple(v.shape) for name, v in model.tasks.rows_from(first).items()},
            **{f"shared.{name}": tuple(p.shape) for name, p in shared.items()}}


def _saved_adaptation(saved: Path, meta: Path, fingerprints: list[str], bound: dict, shapes: dict[str, tuple]
                      ) -> tuple[dict[str, torch.Tensor], dict] | None:
    """This command's own cache of an adaptation, when it was made for these tasks and settings and holds
    exactly `shapes`; anything else (absent, another model, seed or mode, cut by a kill) is None: adapt
    again and overwrite it."""
    try:
        m = json.loads(meta.read_text())
        if m.get("fingerprints") != fingerprints or m.get("settings") != bound:
            return None
        state = load_file(saved)
        if {k: tuple(v.shape) for k, v in state.items()} != shapes:
            return None
        return state, m.get("report")
    except Exception:  # a cache, never an input: whatever is wrong with it, it is rebuilt
        return None


def _chunks(tasks: list[Task], jobs_per_chunk: int, views: int) -> list[list[Task]]:
    chunks, current, size = [], [], 0
    for t in tasks:
        n = views * len(t.test_inputs)
        if current and size + n > jobs_per_chunk:
            chunks.append(current)
            current, size = [], 0
        current.append(t)
        size += n
    if current:
        chunks.append(current)
    return chunks


def solve_chunk(model, tasks: list[Task], rows: dict[str, int], views: int, batch: int, rescore_count: int = 0,
                curve: list[int] | tuple[int, ...] = (), drafts: int = DRAFTS) -> dict[str, list[Tally]]:
    """Decode every (task, test input, view) of the chunk, shortest prompts batched together; then, with
    `rescore_count`, re-score the leading candidates under every view (`generate.rescore`). With `curve`,
    each tally's `prefixes[n]` votes over the first n views only."""
    jobs: list[tuple[str, int, int, Job]] = []  # task, test input, view index, job
    for t in tasks:
        fp = fingerprint(t)
        for i, grid in enumerate(t.test_inputs):
            palette = input_palette([p.input for p in t.train], t.test_inputs) if model.config.palette_views else None
            jobs += [(t.id, i, k, Job(grid, aug, rows[fp]))
                     for k, aug in enumerate(view_augmentations(fp, views, palette))]
    jobs.sort(key=lambda j: j[3].grid.size)
    tallies = {t.id: [Tally.empty() for _ in t.test_inputs] for t in tasks}
    for ts in tallies.values():
        for tl in ts:
            tl.prefixes = {n: Tally.empty() for n in curve}
    inputs = {t.id: t.test_inputs for t in tasks}
    for s in range(0, len(jobs), batch):
        part = jobs[s:s + batch]
        for (tid, i, k, _), cand in zip(part, generate(model, [j for *_, j in part], drafts=drafts), strict=True):
            tally = tallies[tid][i]
            for t in [tally] + [p for n, p in tally.prefixes.items() if k < n]:
                t.add([cand], inputs[tid][i])
    if rescore_count:
        views_of = {(tid, i): [] for tid, ts in tallies.items() for i in range(len(ts))}
        for tid, i, _, j in jobs:
            views_of[(tid, i)].append(j)
        keys = list(views_of)
        rescore(model, [tallies[tid][i] for tid, i in keys], [views_of[k] for k in keys], rescore_count,
                tokens_per_batch=batch * 512)
    return tallies


def predict_file(model_dir: str | Path, challenges: str | Path, out: str | Path, cfg: PredictConfig,
                 limit: int | None = None, restart: bool = False) -> dict:
    start = time.time()
    deadline = start + cfg.minutes * 60 if cfg.minutes else float("inf")
    check_device(cfg.device)
    check_runtime(model_dir, cfg)
    out = Path(out)
    if out.is_dir():
        raise SageError(f"--out {out}: is a directory; give the submission file's path")
    tasks = load_challenges(challenges)
    tests = {t.id: len(t.test_inputs) for t in tasks}  # every task: a --limit may differ from the killed run's
    if limit is not None:
        tasks = tasks[:limit]
    model, fingerprints = load_runner(model_dir, cfg)
    settings = resume_settings(model_dir, cfg, challenges)
    partial = partial_path(out)
    if restart:
        partial.unlink(missing_ok=True)
    done = read_partial(partial, settings, tests) if partial.exists() else {}
    out.parent.mkdir(parents=True, exist_ok=True)
    if not partial.exists():
        atomic_write_text(partial, json.dumps({"settings": settings}) + "\n")
    torch.manual_seed(cfg.seed)
    rows, info, adapted = _rows_for(model, fingerprints, tasks, cfg, out, deadline, settings)
    if cfg.device == "cuda":
        model, adapted = model.to(torch.bfloat16), adapted.to(torch.bfloat16)
    batch = cfg.batch or (384 if cfg.device == "cuda" else 16)
    todo = [t for t in tasks if t.id not in done]
    # Adapted shared weights decode the unknown tasks only: chunks then hold known or unknown tasks, not both.
    known = set(fingerprints)
    groups = [(model, todo)] if adapted is model else [(model, [t for t in todo if fingerprint(t) in known]),
                                                       (adapted, [t for t in todo if fingerprint(t) not in known])]
    work = [(net, chunk) for net, group in groups
            for chunk in _chunks(group, batch * (4 if cfg.device == "cuda" else 1), cfg.views)]
    unfinished = 0
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc="predict", unit="task", dynamic_ncols=True)
    with open(partial, "a") as f:
        for net, chunk in work:
            if time.time() >= deadline:
                break
            t0 = time.time()
            tallies = solve_chunk(net, chunk, rows, cfg.views, batch, cfg.rescore, cfg.curve, cfg.drafts)
            seconds = (time.time() - t0) / len(chunk)
            for t in chunk:
                ts = tallies[t.id]
                row = {"task": t.id, "attempts": [tl.attempts(g) for tl, g in zip(ts, t.test_inputs, strict=True)],
                       "views": cfg.views, "invalid": sum(tl.invalid for tl in ts), "seconds": seconds}
                if cfg.also():  # the vote alone and the first-N-view answers, from the same decoding
                    pairs = list(zip(ts, t.test_inputs, strict=True))
                    row["also"] = {"votes": [tl.attempts(g, by_votes=True) for tl, g in pairs]} if cfg.rescore else {}
                    row["also"].update({f"views{n}": [tl.prefixes[n].attempts(g) for tl, g in pairs]
                                        for n in cfg.curve})
                f.write(json.dumps(row) + "\n")
                done[t.id] = row
            f.flush()
            bar.update(len(chunk))
    bar.close()
    submission = {}
    for t in tasks:
        if t.id in done:
            submission[t.id] = done[t.id]["attempts"]
        else:  # out of time: the copy-input answer, counted in the summary
            unfinished += 1
            submission[t.id] = [{"attempt_1": g.tolist(), "attempt_2": g.tolist()} for g in t.test_inputs]
    atomic_write_json(out, submission)
    for name in cfg.also():
        answers = {tid: done[tid]["also"][name] if tid in done else sub for tid, sub in submission.items()}
        atomic_write_json(out.with_name(f"{out.stem}.{name}.json"), answers)
    finished = [done[t.id] for t in tasks if t.id in done]
    stats = {"tasks": len(tasks), "unfinished": unfinished, "views": cfg.views, "rescore": cfg.rescore,
             "curve": cfg.curve,
             "device": cfg.device,
             "runtime": cfg.runtime if cfg.runtime == "torch" else f"onnx-{model.precision}",
             "seconds": time.time() - start, **info,
             "seconds_per_task": sum(r["seconds"] for r in finished) / max(1, len(finished)),
             "invalid_fraction": sum(r["invalid"] for r in finished) / max(1, sum(
                 r["views"] * len(r["attempts"]) for r in finished))}
    atomic_write_json(out.with_name(out.stem + ".stats.json"), stats, indent=1)
    partial.unlink(missing_ok=True)
    return stats


def summary_line(out: Path, stats: dict) -> str:
    return (f"wrote {out}: {stats['tasks']} tasks, {stats['views']} views each, {stats['unfinished']} unfinished, "
            f"{stats['unknown_tasks']} without an embedding ({stats['adapted']} adapted), "
            f"{stats['seconds']:.0f} s on {stats['device']} ({stats.get('runtime', 'torch')})")
