"""The SAGE ARC model as an IRP plugin.

State: one task, its embedding row, the views still to decode and one vote `Tally` per test input.
One step = one batch of `views_per_step` augmented views of every test input, greedy-decoded with
`student.generate.generate` (the decoding rule of `sage-distill predict`: same views, in the same
order, same vote) and added to the tallies. Energy = the vote's disagreement, 1 - the leading
answer's share, averaged over the test inputs (1 before any vote). Halt: when no remaining view can
change the top two answers of any test input (`Tally.top_two_settled`: pass@2 can no longer
change), when the view budget is spent, or, where `energy_threshold` is set, once the disagreement
is at most that after `min_views` views (a looser rule that may change pass@2).

A task the model has no embedding row for (looked up by the fingerprint of its demonstrations) gets
a fresh mean-initialised row (`SageModel.extend_tasks`) and `adapt_steps` gradient steps on its
demonstrations (`adapt_tasks`), `adapt_steps_per_call` per IRP step, so the ATP budget can stop
adaptation between steps; decoding starts once they are done (or at once with `adapt_steps: 0`).
Adaptation done for a fingerprint is kept for the rest of the run.

The tallies are shared by all states of one run: a vote only gains information, so whichever state
the refiner returns (its lowest-energy one), the answer is the vote over every view decoded.

DREAM (`learn`): more `adapt_tasks` steps on the demonstrations of the stored tasks (memory holds
no test outputs), so tasks seen again are decoded with better-fitted rows.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...arc.augment import IDENTITY, Augmentation, input_palette
from ...arc.task import Task, fingerprint
from ...arc.validate import parse_task
from ...student.generate import Job, Tally, _key, generate, view_augmentations
from ...student.modeling_sage import SageModel, document_mask
from ...student.sequences import encode_pair
from ...training.adapt import adapt_tasks
from ..contract import Answer, HaltDecision, History
from ..memory import Experience


@dataclass
class ArcState:
    task: Task
    fingerprint: str
    row: int
    views: list[Augmentation]  # every view this run may decode, in decoding order
    tallies: list[Tally]  # one per test input, shared by all states of the run
    decoded: int = 0  # views decoded per test input so far
    adapt_left: int = 0  # adaptation steps still to take before decoding
    energy: float = 1.0
    last: dict[str, Any] = field(default_factory=dict)  # what the last step did, for the trace and tests
    step_views: int = 1  # views per test input per decoding step, sized to the run's allocation

    @property
    def remaining(self) -> int:
        return len(self.views) - self.decoded


def expected_output_tokens(task: Task, grid: np.ndarray) -> int:
    """A guess of the answer's token count for cost estimates: the input's size scaled by the
    demonstrations' mean output/input size ratio per axis."""
    rh = np.mean([p.output.shape[0] / p.input.shape[0] for p in task.train]) if task.train else 1.0
    rw = np.mean([p.output.shape[1] / p.input.shape[1] for p in task.train]) if task.train else 1.0
    h = int(np.clip(round(grid.shape[0] * rh), 1, 30))
    w = int(np.clip(round(grid.shape[1] * rw), 1, 30))
    return h * (w + 1) + 1


class ArcSolver:
    name = "arc_solver"
    role = "solver"

    def __init__(self, model: SageModel, fingerprints: list[str], max_views: int = 16, views_per_step: int = 4,
                 energy_threshold: float | None = None, min_views: int = 8, adapt_steps: int = 4,
                 adapt_steps_per_call: int = 1, adapt_lr: float = 1e-2, dream_steps: int = 2) -> None:
        self.model = model.eval()
        self.rows = {fp: i for i, fp in enumerate(fingerprints)}  # fingerprint -> embedding row
        self.known = set(self.rows)  # rows the model was trained with
        self.max_views, self.views_per_step = max_views, views_per_step
        self.energy_threshold, self.min_views = energy_threshold, min_views
        self.adapt_steps, self.adapt_steps_per_call, self.adapt_lr = adapt_steps, adapt_steps_per_call, adapt_lr
        self.dream_steps = dream_steps
        self.adapted: dict[str, int] = {}  # fingerprint -> adaptation steps taken (run and DREAM)
        # Measured costs, for the orchestrator's refusal check: ms per (job x expected output token)
        # of decoding, and ms per adaptation step.
        self.ms_per_token: float | None = None
        self.ms_per_adapt_step: float | None = None

    # ------------------------------------------------------------------ rows

    def row_for(self, task: Task, fp: str | None = None) -> int:
        """The task's embedding row; a fresh mean-initialised one for a task the model never saw."""
        fp = fp or fingerprint(task)
        if fp not in self.rows:
            self.rows[fp] = self.model.extend_tasks(1)
            self.adapted[fp] = 0
        return self.rows[fp]

    def _adapt(self, task: Task, fp: str, steps: int, minutes: float = 24 * 60) -> dict[str, Any]:
        """`steps` gradient steps on the task's demonstrations (never its test outputs). A new seed
        per call, so successive calls see new views of the demonstrations. Eager: a call takes a step or
        two on one task's row length, where a compiled graph would be rebuilt for every task (and loader
        workers started for every call)."""
        t0 = time.perf_counter()
        report = adapt_tasks(self.model, [task.without_answers()], self.rows[fp], minutes, max_steps=steps,
                             lr=self.adapt_lr, seed=self.adapted.get(fp, 0), compiled=False,
                             workers=0)
        if report["steps"]:
            self.ms_per_adapt_step = (time.perf_counter() - t0) * 1000.0 / report["steps"]
        self.adapted[fp] = self.adapted.get(fp, 0) + report["steps"]
        return report

    # ------------------------------------------------------------------ the contract

    def init_state(self, x: Task, ctx: dict[str, Any]) -> ArcState:
        fp = fingerprint(x)
        row = self.row_for(x, fp)
        left = 0 if fp in self.known else max(0, self.adapt_steps - self.adapted.get(fp, 0))
        palette = input_palette([p.input for p in x.train], x.test_inputs) if self.model.config.palette_views else None
        return ArcState(x, fp, row, view_augmentations(fp, self.max_views, palette),
                        [Tally.empty() for _ in x.test_inputs], adapt_left=left,
                        step_views=self.views_for(x, ctx.get("allocation_atp")))

    def views_for(self, task: Task, allocation_atp: float | None) -> int:
        """Views per step: `views_per_step`, fewer when the measured decoding cost (1 ATP = 1 ms) of that
        many views would exceed a tenth of the run's allocation; at least one view."""
        if allocation_atp is None or self.ms_per_token is None:
            return self.views_per_step
        per_view = self.ms_per_token * sum(expected_output_tokens(task, g) for g in task.test_inputs)
        return max(1, min(self.views_per_step, int(0.1 * allocation_atp / max(per_view, 1e-9))))

    def _step_jobs(self, s: ArcState) -> list[tuple[int, Job]]:
        views = s.views[s.decoded:s.decoded + s.step_views]
        return [(i, Job(g, a, s.row)) for i, g in enumerate(s.task.test_inputs) for a in views]

    def step(self, s: ArcState) -> ArcState:
        t0 = time.perf_counter()
        if s.adapt_left > 0:
            report = self._adapt(s.task, s.fingerprint, min(self.adapt_steps_per_call, s.adapt_left))
            n = s.adapt_left - max(report["steps"], 1)
            out = replace(s, adapt_left=max(n, 0), last={"adapt": report})
        else:
            jobs = self._step_jobs(s)
            with torch.inference_mode():
                candidates = generate(self.model, [j for _, j in jobs])
            for (i, _), c in zip(jobs, candidates, strict=True):
                s.tallies[i].add([c], s.task.test_inputs[i])
            decoded = s.decoded + len(jobs) // max(len(s.task.test_inputs), 1)
            energy = float(np.mean([1.0 - t.leader_share() for t in s.tallies]))
            out = replace(s, decoded=decoded, adapt_left=0, energy=energy, last={"views": len(jobs)})
            tokens = sum(expected_output_tokens(s.task, j.grid) for _, j in jobs)
            measured = (time.perf_counter() - t0) * 1000.0 / max(tokens, 1)
            self.ms_per_token = measured if self.ms_per_token is None else 0.5 * (self.ms_per_token + measured)
        return out

    def energy(self, s: ArcState) -> float:
        return s.energy

    def halt_reason(self, s: ArcState) -> str | None:
        """Why a run in state `s` stops now (None: go on). A pure function of the state."""
        if s.adapt_left > 0:
            return None
        if s.remaining <= 0:
            return "views spent"
        if s.decoded > 0 and all(t.top_two_settled(s.remaining) for t in s.tallies):
            return "top two settled"
        if self.energy_threshold is not None and s.decoded >= self.min_views and s.energy <= self.energy_threshold:
            return "confident"
        return None

    def halt(self, history: History, s: ArcState) -> HaltDecision:
        reason = self.halt_reason(s)
        return HaltDecision(reason is not None, reason or "")

    def steps_needed(self) -> int:
        """The most IRP steps one run can take: adaptation, then every view (steps may shrink to one view)."""
        return math.ceil(self.adapt_steps / self.adapt_steps_per_call) + self.max_views

    def estimate_step_ms(self, s: ArcState) -> float:
        if s.adapt_left > 0:
            return self.ms_per_adapt_step or 0.0
        if self.ms_per_token is None:
            return 0.0
        return self.ms_per_token * sum(expected_output_tokens(s.task, j.grid) for _, j in self._step_jobs(s))

    def answer(self, s: ArcState) -> Answer:
        """attempt_1 and attempt_2 per test input: the two most-voted valid grids (ties by summed
        log-likelihood; the copy of the input only as a last resort), as `sage-distill predict`."""
        entries = [t.attempts(g) for t, g in zip(s.tallies, s.task.test_inputs, strict=True)]
        uncertainty = []
        for t in s.tallies:
            ranked = t.ranked()
            if not ranked or not t.votes[_key(ranked[0])]:
                uncertainty.append(1.0)
                continue
            k = _key(ranked[0])
            per_token = t.logprob[k] / t.votes[k] / (ranked[0].shape[0] * (ranked[0].shape[1] + 1) + 1)
            uncertainty.append(1.0 - math.exp(per_token))  # 1 - the leader's mean token probability
        disagreement = float(np.mean([1.0 - t.leader_share() for t in s.tallies]))
        return Answer(entries, float(np.mean(uncertainty)), disagreement)

    # ------------------------------------------------------------------ DREAM

    def learn(self, experiences: list[Experience], atp: float) -> dict[str, Any]:
        """DREAM: `dream_steps` more adaptation steps on each stored task's demonstrations, most
        salient first, within `atp` ms (each step starts only while time is left). Memory stores no
        test outputs, so none is ever trained on. Reports the demonstration loss before and after."""
        end = time.perf_counter() + atp / 1000.0
        tasks: dict[str, Task] = {}
        for e in experiences:
            if isinstance(e.input, dict) and "train" in e.input:
                task = parse_task(e.input, e.input.get("id", e.key), file=None, allow_test_outputs=False)
                tasks.setdefault(fingerprint(task), task)
        before, after, steps, done = [], [], 0, 0
        for fp, task in tasks.items():
            left_min = (end - time.perf_counter()) / 60.0
            if left_min <= 0:
                break
            self.row_for(task, fp)
            loss0 = demonstration_loss(self.model, task, self.rows[fp])
            report = self._adapt(task, fp, self.dream_steps, minutes=left_min)
            if report["steps"]:
                before.append(loss0)
                after.append(demonstration_loss(self.model, task, self.rows[fp]))
                steps += report["steps"]
                done += 1
        return {"tasks": done, "grad_steps": steps,
                "loss_before": float(np.mean(before)) if before else None,
                "loss_after": float(np.mean(after)) if after else None}


@torch.no_grad()
def demonstration_loss(model: SageModel, task: Task, row: int) -> float:
    """Mean cross-entropy of the demonstration outputs (identity view), teacher-forced."""
    device = next(model.parameters()).device
    losses = []
    for p in task.train:
        enc = encode_pair(p.input, p.output, IDENTITY)
        n = len(enc.tokens)
        tokens = torch.from_numpy(enc.tokens)[None].to(device)
        pos = torch.from_numpy(enc.pos)[None].to(device)
        role = torch.from_numpy(enc.role)[None].to(device)
        mask = document_mask(torch.zeros(1, n, dtype=torch.long, device=device))
        logits = model(tokens, pos, torch.full((1, n), row, device=device), torch.zeros(1, n, dtype=torch.long,
                                                                                           device=device), role, mask)
        s = enc.output_start
        losses.append(float(F.cross_entropy(logits[0, s:-1], tokens[0, s + 1:])))
    return float(np.mean(losses)) if losses else float("nan")


def task_to_memory(task: Task) -> dict[str, Any]:
    """What memory stores as an ARC experience's input: demonstrations and test inputs, never answers."""
    return {"id": task.id, **task.without_answers().to_json(with_answers=False)}
