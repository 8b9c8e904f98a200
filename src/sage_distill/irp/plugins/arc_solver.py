"""The SAGE student as an IRP plugin.

State: the task's test inputs under V variant augmentations (a batch of n_test x V canvases), the
encoded input and the current answer state. One step = one refinement loop (`SageModel.step`).
Energy = the halting head's energy (-halt_logit) averaged over the variants and test inputs.
Halt: once the energy falls below `energy_threshold` (the head says P(final) > 1/2), or by the
default rule. The answer: each variant's decoded grid mapped back through its augmentation, voted
(two most-voted distinct grids become attempt_1 and attempt_2).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...arc.augment import Augmentation
from ...arc.task import Task
from ...arc.validate import parse_task
from ...student.modeling_sage import SageModel, SageReadout
from ...student.predict import decode, vote
from ...training.data import fingerprint, to_canvas, variant_augmentations
from ..contract import Answer, HaltDecision, History
from ..memory import Experience
from ..refine import default_halt
from .codes import CodesProvider, fit_codes


@dataclass
class ArcState:
    task: Task
    augs: list[Augmentation]
    x: torch.Tensor  # encoded inputs [n_test * V, T + 900, d]
    h: torch.Tensor  # answer state, same shape
    readout: SageReadout
    steps: int = 0


class ArcSolver:
    name = "arc_solver"
    role = "solver"

    def __init__(self, model: SageModel, codes: CodesProvider, energy_threshold: float = 0.0,
                 dream_steps: int = 60, dream_lr: float = 0.05, dream_model_lr: float = 0.0) -> None:
        self.model, self.codes = model.eval(), codes
        self.energy_threshold = energy_threshold
        self.dream_steps, self.dream_lr, self.dream_model_lr = dream_steps, dream_lr, dream_model_lr
        self.learned: dict[str, torch.Tensor] = {}  # fingerprint -> codes consolidated in DREAM
        self.device = next(model.parameters()).device

    def task_codes(self, task: Task) -> torch.Tensor:
        fp = fingerprint(task)
        return self.learned[fp] if fp in self.learned else self.codes(task)

    def init_state(self, x: Task, ctx: dict[str, Any]) -> ArcState:
        codes = self.task_codes(x).to(self.device)  # may fit codes by gradient: outside inference mode
        with torch.inference_mode():
            return self._encode(x, codes)

    def _encode(self, x: Task, codes: torch.Tensor) -> ArcState:
        augs = variant_augmentations(x, codes.shape[0])
        grids = [to_canvas(a.apply(g)) for g in x.test_inputs for a in augs]
        tokens = torch.from_numpy(np.stack(grids)).long().to(self.device)
        enc = self.model.encode(tokens, codes.repeat(len(x.test_inputs), 1))
        h = self.model.initial_state(enc)
        return ArcState(x, augs, enc, h, self.model.decoder(h))

    @torch.inference_mode()
    def step(self, s: ArcState) -> ArcState:
        h, readout = self.model.step(s.x, s.h)
        return ArcState(s.task, s.augs, s.x, h, readout, s.steps + 1)

    def energy(self, s: ArcState) -> float:
        return float(s.readout.energy.mean())

    def halt(self, history: History) -> HaltDecision:
        if history and history[-1].energy < self.energy_threshold:
            return HaltDecision(True, "confident")
        return default_halt(history)

    @torch.inference_mode()
    def answer(self, s: ArcState) -> Answer:
        """Decode every augmented variant, map it back, and vote, exactly as `sage-distill predict` does."""
        r, v = s.readout, len(s.augs)
        probs = r.logits.softmax(-1)
        entropy = (-(probs * probs.clamp_min(1e-12).log()).sum(-1) / np.log(probs.shape[-1])).cpu().numpy()
        confidence = torch.sigmoid(r.halt_logit).tolist()
        entries, uncertainty, disagreement = [], [], []
        for t in range(len(s.task.test_inputs)):
            rows = range(t * v, (t + 1) * v)
            raw = [decode(r, b) for b in rows]  # in each variant's own (augmented) frame
            candidates = [aug.invert(g) for aug, g in zip(s.augs, raw, strict=True)]
            uncertainty += [float(entropy[b, : g.shape[0], : g.shape[1]].mean())
                            for b, g in zip(rows, raw, strict=True)]
            ranked = vote(candidates, [confidence[b] for b in rows])
            second = ranked[1] if len(ranked) > 1 else ranked[0]
            entries.append({"attempt_1": ranked[0].tolist(), "attempt_2": second.tolist()})
            top = sum(np.array_equal(c, ranked[0]) for c in candidates)
            disagreement.append(1.0 - top / v)
        return Answer(entries, float(np.mean(uncertainty)), float(np.mean(disagreement)))

    def learn(self, experiences: list[Experience], atp: float) -> dict[str, Any]:
        """DREAM: fine-tune the codes (and optionally the model) of stored tasks on their augmented
        demonstration pairs, within `atp` milliseconds. Stored inputs carry no test outputs."""
        end = time.perf_counter() + atp / 1000.0
        tasks = {}
        for e in experiences:
            if isinstance(e.input, dict) and "train" in e.input:
                task = parse_task(e.input, e.input.get("id", e.key), file=None, allow_test_outputs=False)
                tasks.setdefault(fingerprint(task), task)
        before, after, steps = [], [], 0
        for fp, task in tasks.items():
            if time.perf_counter() >= end:
                break
            codes, curve = fit_codes(self.model, task, self.task_codes(task), self.dream_steps, self.dream_lr,
                                     self.dream_model_lr, deadline=lambda: time.perf_counter() >= end)
            if curve:
                self.learned[fp] = codes
                before.append(curve[0])
                after.append(curve[-1])
                steps += len(curve)
        self.model.eval()
        return {"tasks": len(before), "grad_steps": steps,
                "loss_before": float(np.mean(before)) if before else None,
                "loss_after": float(np.mean(after)) if after else None}


def task_to_memory(task: Task) -> dict[str, Any]:
    """What memory stores as an ARC experience's input: demonstrations and test inputs, never answers."""
    return {"id": task.id, **task.without_answers().to_json(with_answers=False)}
