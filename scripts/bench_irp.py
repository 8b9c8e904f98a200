"""IRP measurements for docs/BENCHMARKS.md.

    python scripts/bench_irp.py --model DIR --dataset arc1 --split evaluation --limit N --out FILE.json

1. Views saved at equal pass@2: the ARC solver plugin on each task, decoding `--views-per-step`
   views per IRP step up to `--max-views`. Greedy decoding of a fixed view order is deterministic,
   so a run that halts early is a prefix of the run that decodes every view: each task is run once
   with halting off, and after every step the plugin's own halt rule (`ArcSolver.halt_reason`) is
   asked whether it would stop there. Reported: mean views and pass@2 (the project's scorer) of the
   adaptive arm ("top two settled"; and, with `--energy-threshold`, the looser "confident" arm) and
   of fixed arms at every multiple of the step size.
2. Orchestrator overhead per cycle excluding plugin compute: synthetic plugins (near-zero compute),
   cycle wall time minus time inside plugins; with and without memory + trace I/O.
3. DREAM: the orchestrator answers the stream, then idles into DREAM (adaptation steps on the stored
   tasks' demonstration pairs) and answers the stream again; pass@2 before and after.
`--model tiny-random` uses a randomly initialised tiny model: a smoke test of the script, not a result.
`--max-input-cells C` keeps only tasks whose test inputs have at most C cells each (CPU runs).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sage_distill.arc.datasets import load_dataset
from sage_distill.arc.task import Task, fingerprint
from sage_distill.evaluation.scoring import score_submission
from sage_distill.evaluation.submission import parse_predictions
from sage_distill.irp.config import OrchestratorSettings, RunConfig
from sage_distill.irp.memory import Memory
from sage_distill.irp.metabolic import State
from sage_distill.irp.orchestrator import Orchestrator
from sage_distill.irp.plugins.arc_solver import ArcSolver
from sage_distill.irp.plugins.synthetic import ScriptedPerception, ScriptedPlugin
from sage_distill.irp.runner import build_runtime, run_stream
from sage_distill.irp.trace import TraceWriter
from sage_distill.student.checkpoint import load_model
from sage_distill.student.configuration_sage import SageConfig
from sage_distill.student.modeling_sage import SageModel
from sage_distill.utils.io import atomic_write_json


def pass_at_2(predictions: dict[str, list[dict[str, Any]]], tasks: list[Task]) -> float:
    solutions = {t.id: list(t.test_outputs or ()) for t in tasks}
    return float(score_submission(parse_predictions(predictions), solutions)["pass@2"])


def views_saved(solver: ArcSolver, tasks: list[Task], progress: bool = False) -> dict[str, Any]:
    """Adaptive halting vs fixed view counts, read off one full run per task (see the docstring)."""
    step = solver.views_per_step
    fixed_at = list(range(step, solver.max_views + 1, step))
    if fixed_at[-1] != solver.max_views:
        fixed_at.append(solver.max_views)
    fixed: dict[int, dict[str, Any]] = {n: {} for n in fixed_at}
    arms: dict[str, dict[str, Any]] = {"adaptive": {}, "confident": {}}
    used: dict[str, list[int]] = {"adaptive": [], "confident": []}
    reasons: dict[str, dict[str, int]] = {"adaptive": {}, "confident": {}}
    threshold, t0 = solver.energy_threshold, time.perf_counter()
    for k, task in enumerate(tasks):
        x = task.without_answers()
        s = solver.init_state(x, {})
        stopped: dict[str, tuple[int, list]] = {}
        while s.adapt_left > 0:
            s = solver.step(s)
        while s.remaining > 0:
            s = solver.step(s)
            answer = solver.answer(s).value
            if s.decoded in fixed:
                fixed[s.decoded][task.id] = answer
            solver.energy_threshold = None  # the strict rule alone
            strict = solver.halt_reason(s)
            solver.energy_threshold = threshold
            loose = solver.halt_reason(s) if threshold is not None else strict
            for arm, why in (("adaptive", strict), ("confident", loose)):
                if why is not None and arm not in stopped:
                    stopped[arm] = (s.decoded, copy.deepcopy(answer), why)
        for arm in arms:
            n, answer, why = stopped[arm]
            arms[arm][task.id] = answer
            used[arm].append(n)
            reasons[arm][why] = reasons[arm].get(why, 0) + 1
        if progress:
            print(f"[{k + 1}/{len(tasks)}] {task.id}: adaptive {stopped['adaptive'][0]} views "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    out: dict[str, Any] = {
        "max_views": solver.max_views, "views_per_step": step,
        "fixed": {str(n): {"views": n, "pass@2": pass_at_2(p, tasks)} for n, p in fixed.items()},
        "adaptive": {"rule": "top two settled", "mean_views": float(np.mean(used["adaptive"])),
                     "pass@2": pass_at_2(arms["adaptive"], tasks), "halt_reasons": reasons["adaptive"]},
        "seconds": round(time.perf_counter() - t0, 1)}
    out["adaptive"]["views_saved"] = 1.0 - out["adaptive"]["mean_views"] / solver.max_views
    if threshold is not None:
        out["confident"] = {"rule": f"top two settled, or disagreement <= {threshold} after {solver.min_views} views",
                            "mean_views": float(np.mean(used["confident"])),
                            "pass@2": pass_at_2(arms["confident"], tasks), "halt_reasons": reasons["confident"]}
        out["confident"]["views_saved"] = 1.0 - out["confident"]["mean_views"] / solver.max_views
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


def dream_effect(model: SageModel, fingerprints: list[str], tasks: list[Task], max_views: int, views_per_step: int,
                 dream_steps: int, dream_ms: float) -> dict[str, Any]:
    cfg = RunConfig.model_validate({
        "orchestrator": {"base_budget": 2 * dream_ms, "reserve_capacity": 1e12, "perception_budget": 1e9,
                         "dream_experiences": len(tasks)},
        "plugins": {"arc_solver": {"max_views": max_views, "views_per_step": views_per_step,
                                   "dream_steps": dream_steps}}})
    with tempfile.TemporaryDirectory() as d:
        rt = build_runtime(cfg, model, fingerprints, Path(d))
        before = run_stream(rt, tasks, cfg, progress=False)
        orch, dreams = rt.orchestrator, []
        entered = False
        while not entered or orch.metabolism.state is State.DREAM:  # idle into DREAM and through it
            res = orch.cycle(None)
            entered = entered or res.state is State.DREAM
            if "dream" in res.record:
                dreams.append(res.record["dream"])
        after = run_stream(rt, tasks, cfg, progress=False)
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
    ap.add_argument("--max-input-cells", type=int, default=None, help="keep tasks whose test inputs are this small")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--max-views", type=int, default=16)
    ap.add_argument("--views-per-step", type=int, default=4)
    ap.add_argument("--energy-threshold", type=float, default=None, help="also report the 'confident' rule")
    ap.add_argument("--min-views", type=int, default=8)
    ap.add_argument("--adapt-steps", type=int, default=4, help="for tasks the model has no row for")
    ap.add_argument("--dream-steps", type=int, default=2)
    ap.add_argument("--dream-ms", type=float, default=60000.0, help="ATP (ms) per DREAM cycle")
    ap.add_argument("--overhead-cycles", type=int, default=500)
    ap.add_argument("--skip", nargs="*", default=[], choices=["halting", "overhead", "dream"])
    ap.add_argument("--progress", action="store_true")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.model == "tiny-random":
        model, fingerprints = SageModel(SageConfig.preset("tiny")).eval(), []
        model_desc = "tiny-random (NOT a result)"
    else:
        model, fingerprints = load_model(a.model, a.device)
        model_desc = str(a.model)
    tasks = load_dataset(a.dataset, a.split)
    if a.max_input_cells:
        tasks = [t for t in tasks if max(g.size for g in t.test_inputs) <= a.max_input_cells]
    tasks = tasks[: a.limit]
    report: dict[str, Any] = {"model": model_desc, "dataset": a.dataset, "split": a.split, "tasks": len(tasks),
                              "task_ids": [t.id for t in tasks], "max_input_cells": a.max_input_cells,
                              "device": a.device, "torch_threads": torch.get_num_threads(),
                              "known_tasks": sum(fingerprint(t) in set(fingerprints) for t in tasks)}
    if "halting" not in a.skip:
        solver = ArcSolver(model, fingerprints, a.max_views, a.views_per_step, a.energy_threshold, a.min_views,
                           a.adapt_steps)
        report["halting"] = views_saved(solver, tasks, a.progress)
    if "overhead" not in a.skip:
        report["overhead"] = {"no_io": orchestrator_overhead(a.overhead_cycles, False),
                              "memory_and_trace": orchestrator_overhead(a.overhead_cycles, True)}
    if "dream" not in a.skip:
        report["dream"] = dream_effect(model, fingerprints, tasks, a.max_views, a.views_per_step, a.dream_steps,
                                       a.dream_ms)
    atomic_write_json(a.out, report, indent=2)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
