"""IRP measurements for docs/BENCHMARKS.md.

    python -m sage_distill.irp.bench --model DIR --dataset arc1 --split evaluation --limit N --out FILE.json

1. Adaptive halting vs fixed steps: the ARC solver plugin on each task, halting by its own rule
   (halting head, then the default rule) vs always running max_steps; mean steps and pass@2
   (the project's scorer, `evaluation.scoring.score_submission`). Codes are fitted once per task
   and shared by both arms, so only halting differs.
2. Orchestrator overhead per cycle excluding plugin compute: synthetic plugins (near-zero compute),
   cycle wall time minus time inside plugins; with and without memory + trace I/O.
3. DREAM: the orchestrator answers the stream, then idles into DREAM (consolidation on the stored
   tasks' demonstration pairs) and answers the stream again; pass@2 before (= without DREAM) and after.
`--model tiny-random` uses a randomly initialised tiny model: a smoke test of the script, not a result.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..arc.datasets import load_dataset
from ..arc.task import Task
from ..evaluation.scoring import score_submission
from ..evaluation.submission import parse_predictions
from ..student.checkpoint import load_model
from ..student.configuration_sage import SageConfig
from ..student.modeling_sage import SageModel
from ..utils.io import atomic_write_json
from .config import OrchestratorSettings, RunConfig
from .contract import Budget, HaltDecision
from .memory import Memory
from .metabolic import State
from .orchestrator import Orchestrator
from .plugins.arc_solver import ArcSolver
from .plugins.codes import FittedCodes
from .plugins.synthetic import ScriptedPerception, ScriptedPlugin
from .refine import refine
from .runner import build_runtime, run_stream
from .trace import TraceWriter


def pass_at_2(predictions: dict[str, list[dict[str, Any]]], tasks: list[Task]) -> float:
    solutions = {t.id: list(t.test_outputs or ()) for t in tasks}
    return float(score_submission(parse_predictions(predictions), solutions)["pass@2"])


class _Fixed:
    """The same solver with halting switched off: always max_steps."""

    def __init__(self, solver: ArcSolver) -> None:
        self.s, self.name = solver, solver.name

    def init_state(self, x, ctx):
        return self.s.init_state(x, ctx)

    def step(self, state):
        return self.s.step(state)

    def energy(self, state):
        return self.s.energy(state)

    def halt(self, history):
        return HaltDecision(False)


def adaptive_vs_fixed(model: SageModel, table: Any, tasks: list[Task], variants: int, fit_steps: int,
                      max_steps: int) -> dict[str, Any]:
    codes = FittedCodes(model, variants, table, fit_steps)
    solver = ArcSolver(model, codes)
    out: dict[str, Any] = {}
    for arm, plugin in (("adaptive", solver), ("fixed", _Fixed(solver))):
        preds, steps, reasons, t0 = {}, [], {}, time.perf_counter()
        for task in tasks:
            state, trace = refine(plugin, task.without_answers(), {}, Budget(max_steps=max_steps))
            preds[task.id] = solver.answer(state).value
            steps.append(len(trace.steps))
            reasons[trace.halt_reason] = reasons.get(trace.halt_reason, 0) + 1
        out[arm] = {"mean_steps": float(np.mean(steps)), "pass@2": pass_at_2(preds, tasks),
                    "halt_reasons": reasons, "seconds": round(time.perf_counter() - t0, 3)}
    return out


def orchestrator_overhead(cycles: int, with_io: bool, plugins: int = 3, steps: int = 4) -> dict[str, float]:
    solvers = [ScriptedPlugin(f"p{i}", lambda k, x: 1.0 / (k + 1), value=lambda x: 0) for i in range(plugins)]
    settings = OrchestratorSettings(base_budget=1e9, reserve_capacity=1e12)
    with tempfile.TemporaryDirectory() as d:
        memory = Memory(Path(d) / "m.sqlite") if with_io else None
        trace = TraceWriter(Path(d) / "t.jsonl") if with_io else None
        orch = Orchestrator([ScriptedPerception(), *solvers], settings, memory, trace,
                            max_steps={s.name: steps for s in solvers})
        for _ in range(10):  # warm-up
            orch.cycle({"embedding": [1.0, 0.0]}, key="warm")
        over = []
        for i in range(cycles):
            res = orch.cycle({"embedding": [float(np.cos(i)), float(np.sin(i))]}, key=f"k{i}")
            over.append(res.overhead_ms)
        if memory is not None:
            memory.close()
        if trace is not None:
            trace.close()
    return {"cycles": cycles, "plugins": plugins + 1, "steps_per_plugin": steps,
            "mean_ms": statistics.fmean(over), "median_ms": statistics.median(over),
            "p95_ms": float(np.percentile(over, 95))}


def dream_effect(model: SageModel, table: Any, tasks: list[Task], variants: int, fit_steps: int, dream_steps: int,
                 dream_ms: float) -> dict[str, Any]:
    cfg = RunConfig.model_validate({
        "orchestrator": {"base_budget": 2 * dream_ms, "reserve_capacity": 1e12, "perception_budget": 1e9,
                         "dream_experiences": len(tasks)},
        "plugins": {"arc_solver": {"variants": variants, "fit_steps": fit_steps, "dream_steps": dream_steps}}})
    with tempfile.TemporaryDirectory() as d:
        rt = build_runtime(cfg, model, table, Path(d))
        before = run_stream(rt, tasks, cfg)
        orch, dreams = rt.orchestrator, []
        entered = False
        while not entered or orch.metabolism.state is State.DREAM:  # idle into DREAM and through it
            res = orch.cycle(None)
            entered = entered or res.state is State.DREAM
            if "dream" in res.record:
                dreams.append(res.record["dream"])
        after = run_stream(rt, tasks, cfg)
        rt.close()
    learned = [s for d in dreams for s in d["learners"].values()]
    return {"without_dream": {"pass@2": pass_at_2(before, tasks)},
            "with_dream": {"pass@2": pass_at_2(after, tasks)},
            "dream_cycles": len(dreams), "dream_ms": sum(d["atp"] for d in dreams),
            "tasks_consolidated": sum(s["tasks"] for s in learned),
            "loss_before": [s["loss_before"] for s in learned], "loss_after": [s["loss_after"] for s in learned]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="SAGE model folder, or 'tiny-random' (smoke test only)")
    ap.add_argument("--dataset", default="arc1")
    ap.add_argument("--split", default="evaluation")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--fit-steps", type=int, default=30)
    ap.add_argument("--max-steps", type=int, default=None, help="default: the model's max_steps")
    ap.add_argument("--dream-steps", type=int, default=60)
    ap.add_argument("--dream-ms", type=float, default=60000.0, help="ATP (ms) per DREAM cycle")
    ap.add_argument("--overhead-cycles", type=int, default=500)
    ap.add_argument("--skip", nargs="*", default=[], choices=["halting", "overhead", "dream"])
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    if a.model == "tiny-random":
        model, table, model_desc = SageModel(SageConfig.preset("tiny")).eval(), None, "tiny-random (NOT a result)"
    else:
        model, table = load_model(a.model, a.device)
        model_desc = str(a.model)
    tasks = load_dataset(a.dataset, a.split)[: a.limit]
    report: dict[str, Any] = {"model": model_desc, "dataset": a.dataset, "split": a.split, "tasks": len(tasks),
                              "device": a.device, "variants": a.variants, "fit_steps": a.fit_steps,
                              "torch_threads": torch.get_num_threads()}
    steps = a.max_steps or model.config.max_steps
    if "halting" not in a.skip:
        report["halting"] = adaptive_vs_fixed(model, table, tasks, a.variants, a.fit_steps, steps)
        report["halting"]["max_steps"] = steps
    if "overhead" not in a.skip:
        report["overhead"] = {"no_io": orchestrator_overhead(a.overhead_cycles, False),
                              "memory_and_trace": orchestrator_overhead(a.overhead_cycles, True)}
    if "dream" not in a.skip:
        report["dream"] = dream_effect(model, table, tasks, a.variants, a.fit_steps, a.dream_steps, a.dream_ms)
    atomic_write_json(a.out, report, indent=2)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
