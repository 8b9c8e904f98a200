"""Solving ARC tasks from a challenges file with a trained SAGE student.

Per task: derive the same fixed augmentations training used (from the demonstration pairs alone),
take the task codes fitted in training when the demonstrations are known, otherwise fit fresh codes
to the demonstrations (test-time adaptation, model frozen); then predict every test input under
every augmentation, map each answer back through the inverse augmentation, and vote.
Nothing here can read a test output: tasks come from `load_challenges`, which drops them.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..arc.augment import Augmentation
from ..arc.task import Task
from ..utils.io import atomic_write_json
from .adapt import fit_codes
from .checkpoint import TaskCodes
from .modeling_sage import SageModel, SageReadout


@dataclass
class PredictConfig:
    variants: int | None = None  # default: the model's table's variants (16)
    halting: str = "adaptive"  # or "fixed": always run max_steps
    halt_threshold: float = 0.0  # halt when halt_logit > threshold, i.e. P(correct) > 0.5
    max_steps: int | None = None
    tta_steps: int = 100  # for tasks whose demonstrations the model has never seen
    tta_lr: float = 0.05
    seed: int = 0


@dataclass
class TaskResult:
    attempts: list[dict[str, list]]  # one {"attempt_1", "attempt_2"} per test input
    steps_used: float  # mean refinement steps over test inputs and variants
    codes_source: str  # "table" or "fitted"


def _data():
    from ..training import data

    return data


def task_batch(task: Task, augs: list[Augmentation], grids: list[np.ndarray]) -> torch.Tensor:
    canvas = _data().to_canvas
    return torch.from_numpy(np.stack([canvas(a.apply(g)) for a in augs for g in grids])).long()


@torch.no_grad()
def run_steps(model: SageModel, tokens: torch.Tensor, codes: torch.Tensor, cfg: PredictConfig,
              ) -> tuple[list[SageReadout], torch.Tensor]:
    """Refine until every example has halted (or max steps). Returns, per example, the readout
    of the step it halted at (as a list of one readout per example index) and its steps used."""
    max_steps = cfg.max_steps or model.config.max_steps
    x = model.encode(tokens, codes)
    state = model.initial_state(x)
    n = tokens.shape[0]
    halted = torch.zeros(n, dtype=torch.bool, device=tokens.device)
    steps_used = torch.full((n,), max_steps, device=tokens.device)
    chosen: SageReadout | None = None
    for s in range(1, max_steps + 1):
        state, r = model.step(x, state)
        if chosen is None:
            chosen = r
        else:  # keep each example's readout from the step it halted at
            keep = ~halted
            for name in ("logits", "height_logits", "width_logits", "halt_logit"):
                getattr(chosen, name)[keep] = getattr(r, name)[keep]
        if cfg.halting == "adaptive":
            newly = (r.halt_logit > cfg.halt_threshold) & ~halted
            steps_used[newly] = s
            halted |= newly
            if bool(halted.all()):
                break
    assert chosen is not None
    return chosen, steps_used.float()


def decode(readout: SageReadout, i: int) -> np.ndarray:
    h = int(readout.height_logits[i].argmax()) + 1
    w = int(readout.width_logits[i].argmax()) + 1
    cells = readout.logits[i, :h, :w, :10].argmax(-1)  # colours only: OUTSIDE is never an answer
    return cells.cpu().numpy().astype(np.uint8)


def vote(candidates: list[np.ndarray], confidence: list[float]) -> list[np.ndarray]:
    """Most frequent answers first; ties broken by the halting head's summed confidence."""
    key = lambda g: (g.shape, g.tobytes())  # noqa: E731
    counts: Counter = Counter()
    conf: dict = {}
    grids: dict = {}
    for g, c in zip(candidates, confidence, strict=True):
        k = key(g)
        counts[k] += 1
        conf[k] = conf.get(k, 0.0) + c
        grids[k] = g
    ranked = sorted(counts, key=lambda k: (counts[k], conf[k]), reverse=True)
    return [grids[k] for k in ranked]


def solve_task(model: SageModel, codes: TaskCodes | None, task: Task, cfg: PredictConfig) -> TaskResult:
    data = _data()
    device = next(model.parameters()).device
    variants = cfg.variants or (codes.variants if codes else 8)
    augs = data.variant_augmentations(task, variants)
    known = codes.lookup(data.fingerprint(task)) if codes else None
    if known is not None and len(known) >= variants:
        task_codes, source = known[:variants].to(device), "table"
    else:
        init = codes.mean()[:variants].to(device) if codes else torch.zeros(variants, model.config.code_dim,
                                                                             device=device)
        torch.manual_seed(cfg.seed)
        task_codes, _ = fit_codes(model, task, init, cfg.tta_steps, cfg.tta_lr)
        source = "fitted"
    attempts, steps = [], []
    for grid in task.test_inputs:
        tokens = task_batch(task, augs, [grid]).to(device)
        readout, used = run_steps(model, tokens, task_codes, cfg)
        steps.append(float(used.mean()))
        candidates = [a.invert(decode(readout, i)) for i, a in enumerate(augs)]
        confidence = torch.sigmoid(readout.halt_logit).tolist()
        ranked = vote(candidates, confidence)
        second = ranked[1] if len(ranked) > 1 else ranked[0]
        attempts.append({"attempt_1": ranked[0].tolist(), "attempt_2": second.tolist()})
    return TaskResult(attempts, float(np.mean(steps)), source)


def predict_file(model: SageModel, codes: TaskCodes | None, tasks: list[Task], out: str | Path,
                 cfg: PredictConfig) -> dict:
    """Predict every task, appending each finished task to `<out>.partial.jsonl` so a killed run
    resumes where it stopped; the final file is written atomically."""
    out = Path(out)
    partial = out.with_name(out.name + ".partial.jsonl")
    done: dict[str, dict] = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut by a kill: redo that task
            done[row["task"]] = row
    torch.manual_seed(cfg.seed)
    todo = [t for t in tasks if t.id not in done]
    start = time.time()
    with open(partial, "a") as f:
        for task in tqdm(todo, desc="predict", unit="task", dynamic_ncols=True):
            t0 = time.time()
            r = solve_task(model, codes, task, cfg)
            row = {"task": task.id, "attempts": r.attempts, "steps": r.steps_used, "codes": r.codes_source,
                   "seconds": time.time() - t0}
            f.write(json.dumps(row) + "\n")
            f.flush()
            done[task.id] = row
    submission = {t.id: done[t.id]["attempts"] for t in tasks}
    atomic_write_json(out, submission)
    stats = {"tasks": len(tasks), "seconds": time.time() - start,
             "mean_steps": float(np.mean([done[t.id]["steps"] for t in tasks])) if tasks else 0.0,
             "codes_fitted": sum(done[t.id]["codes"] == "fitted" for t in tasks),
             "seconds_per_task": float(np.median([done[t.id]["seconds"] for t in tasks])) if tasks else 0.0}
    atomic_write_json(out.with_name(out.stem + ".stats.json"), stats, indent=1)
    partial.unlink()
    return stats
