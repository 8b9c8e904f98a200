"""`sage-distill predict`: solve every task of a challenges file (which holds no answers).

Per task: find its embedding row by the fingerprint of its demonstrations (never its id); tasks the
model has no row for get fresh rows, trained on their demonstrations for `--adapt-minutes` (all such
tasks together). Then every test input is decoded under `--views` augmented views, batched across
tasks with a KV cache; answers are mapped back, invalid grids dropped, and voted (ties broken by
summed log-likelihood). Finished tasks are appended to `<out>.partial.jsonl` as they complete, so
a killed run loses at most the chunk of tasks in flight and a rerun resumes; `--minutes` bounds the
whole command, adaptation included, and tasks left unfinished get the copy-input answer (counted).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file
from tqdm import tqdm

from ..arc.augment import input_palette
from ..arc.datasets import load_challenges
from ..arc.task import Task, fingerprint
from ..errors import SageError
from ..student.checkpoint import load_model
from ..student.generate import Job, Tally, generate, rescore, view_augmentations
from ..student.modeling_sage import SageModel
from ..training.adapt import adapt_tasks
from ..utils.device import check_device
from ..utils.io import atomic_save_safetensors, atomic_write_json


class PredictConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    views: int = Field(8, ge=1, le=1024)
    adapt_minutes: float = Field(0.0, ge=0, le=24 * 60)
    adapt_steps: int | None = Field(None, ge=1)  # a step cap besides the minutes (tests, smoke runs)
    minutes: float | None = Field(None, gt=0)
    device: Literal["cpu", "cuda"] = "cpu"
    batch: int = Field(0, ge=0)  # sequences per decoding batch; 0 picks 384 on a GPU and 16 on the CPU
    seed: int = Field(0, ge=0)
    runtime: Literal["torch", "onnx"] = "torch"  # onnx: graphs from `sage-distill export`, ONNX Runtime on the CPU
    # Re-score this many most-voted candidates per test input by their likelihood under every view (product
    # of experts) before the top two are chosen; 0 keeps the vote. Costs one teacher-forced pass per
    # (candidate, view): cheap on a GPU, several seconds a task on a CPU.
    rescore: int = Field(0, ge=0, le=64)


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


def _rows_for(model: SageModel, fingerprints: list[str], tasks: list[Task], cfg: PredictConfig, out: Path,
              deadline: float) -> tuple[dict[str, int], dict]:
    """Embedding row per task fingerprint; adapts (or reloads the adaptation of) unknown tasks."""
    rows = {fp: i for i, fp in enumerate(fingerprints)}
    unknown: dict[str, Task] = {}
    for t in tasks:
        fp = fingerprint(t)
        if fp not in rows:
            unknown.setdefault(fp, t)
    info = {"unknown_tasks": len(unknown), "adapted": 0}
    if not unknown:
        return rows, info
    if not isinstance(model, SageModel):  # ONNX graphs: the mean row, as SageModel.extend_tasks gives a new task
        rows.update({fp: model.unknown_row for fp in unknown})
        return rows, info
    first = model.extend_tasks(len(unknown))
    for i, fp in enumerate(unknown):
        rows[fp] = first + i
    saved = out.with_name(out.name + ".adapted.safetensors")
    meta = out.with_name(out.name + ".adapted.json")
    if meta.is_file() and json.loads(meta.read_text()).get("fingerprints") == list(unknown):
        state = load_file(saved, device=str(next(model.parameters()).device))
        with torch.no_grad():
            model.tasks.task.weight[first:] = state["task"]
            model.tasks.colour.weight[first * 10:] = state["colour"]
        info["adapted"] = len(unknown)
        info["adaptation"] = json.loads(meta.read_text()).get("report")
    elif cfg.adapt_minutes > 0:
        minutes = min(cfg.adapt_minutes, max(0.0, (deadline - time.time()) / 60))
        report = adapt_tasks(model, list(unknown.values()), first, minutes, cfg.adapt_steps, seed=cfg.seed)
        atomic_save_safetensors(saved, {"task": model.tasks.task.weight[first:].detach().cpu(),
                                        "colour": model.tasks.colour.weight[first * 10:].detach().cpu()})
        atomic_write_json(meta, {"fingerprints": list(unknown), "report": report})
        info["adapted"], info["adaptation"] = len(unknown), report
    return rows, info


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


def solve_chunk(model, tasks: list[Task], rows: dict[str, int], views: int, batch: int, rescore_count: int = 0
                ) -> dict[str, list[Tally]]:
    """Decode every (task, test input, view) of the chunk, shortest prompts batched together; then, with
    `rescore_count`, re-score the leading candidates under every view (`generate.rescore`)."""
    jobs: list[tuple[str, int, Job]] = []
    for t in tasks:
        fp = fingerprint(t)
        for i, grid in enumerate(t.test_inputs):
            palette = input_palette([p.input for p in t.train], t.test_inputs) if model.config.palette_views else None
            jobs += [(t.id, i, Job(grid, aug, rows[fp])) for aug in view_augmentations(fp, views, palette)]
    jobs.sort(key=lambda j: j[2].grid.size)
    tallies = {t.id: [Tally.empty() for _ in t.test_inputs] for t in tasks}
    inputs = {t.id: t.test_inputs for t in tasks}
    for s in range(0, len(jobs), batch):
        part = jobs[s:s + batch]
        for (tid, i, _), cand in zip(part, generate(model, [j for _, _, j in part]), strict=True):
            tallies[tid][i].add([cand], inputs[tid][i])
    if rescore_count:
        views_of = {(tid, i): [] for tid, ts in tallies.items() for i in range(len(ts))}
        for tid, i, j in jobs:
            views_of[(tid, i)].append(j)
        keys = list(views_of)
        rescore(model, [tallies[tid][i] for tid, i in keys], [views_of[k] for k in keys], rescore_count,
                tokens_per_batch=batch * 512)
    return tallies


def predict_file(model_dir: str | Path, challenges: str | Path, out: str | Path, cfg: PredictConfig,
                 limit: int | None = None) -> dict:
    start = time.time()
    deadline = start + cfg.minutes * 60 if cfg.minutes else float("inf")
    check_device(cfg.device)
    check_runtime(model_dir, cfg)
    out = Path(out)
    if out.is_dir():
        raise SageError(f"--out {out}: is a directory; give the submission file's path")
    tasks = load_challenges(challenges)
    if limit is not None:
        tasks = tasks[:limit]
    model, fingerprints = load_runner(model_dir, cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rows, info = _rows_for(model, fingerprints, tasks, cfg, out, deadline)
    if cfg.device == "cuda":
        model = model.to(torch.bfloat16)
    batch = cfg.batch or (384 if cfg.device == "cuda" else 16)

    partial = out.with_name(out.name + ".partial.jsonl")
    done: dict[str, dict] = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut by a kill: redo that task
            done[row["task"]] = row
    todo = [t for t in tasks if t.id not in done]
    unfinished = 0
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc="predict", unit="task", dynamic_ncols=True)
    with open(partial, "a") as f:
        for chunk in _chunks(todo, batch * (4 if cfg.device == "cuda" else 1), cfg.views):
            if time.time() >= deadline:
                break
            t0 = time.time()
            tallies = solve_chunk(model, chunk, rows, cfg.views, batch, cfg.rescore)
            seconds = (time.time() - t0) / len(chunk)
            for t in chunk:
                ts = tallies[t.id]
                row = {"task": t.id, "attempts": [tl.attempts(g) for tl, g in zip(ts, t.test_inputs, strict=True)],
                       "views": cfg.views, "invalid": sum(tl.invalid for tl in ts), "seconds": seconds}
                if cfg.rescore:  # the vote's own answers too: the re-scoring's effect from one run
                    row["vote_attempts"] = [tl.attempts(g, by_votes=True) for tl, g in zip(ts, t.test_inputs,
                                                                                          strict=True)]
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
    if cfg.rescore:
        votes_only = {tid: done[tid].get("vote_attempts", sub) if tid in done else sub
                      for tid, sub in submission.items()}
        atomic_write_json(out.with_name(out.stem + ".votes.json"), votes_only)
    finished = [done[t.id] for t in tasks if t.id in done]
    stats = {"tasks": len(tasks), "unfinished": unfinished, "views": cfg.views, "rescore": cfg.rescore,
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
