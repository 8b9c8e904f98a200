"""`sage-distill demo`: export ARC-AGI-1 evaluation, predict, score beside the baselines, render three
tasks. The predictor is a parameter so the trained model replaces the baseline in one line."""

from __future__ import annotations

import time
from pathlib import Path

from .arc.datasets import load_challenges
from .arc.export import export_split
from .arc.render import save_task_png
from .evaluation.baselines import Predictor, copy_input
from .evaluation.scoring import evaluate_files, format_table
from .evaluation.submission import load_predictions, write_predictions

DATASET, SPLIT = "arc1", "evaluation"


def run_demo(out_dir: str | Path, predictor: Predictor = copy_input, name: str = "copy-baseline") -> dict:
    start = time.perf_counter()
    out_dir = Path(out_dir)
    challenges, solutions = export_split(DATASET, SPLIT, out_dir / "data")
    # The predictor sees the challenges file only: no test output exists in what it is given.
    tasks = load_challenges(challenges)
    predictions = out_dir / "predictions.json"
    write_predictions(predictions, predictor(tasks))
    report = evaluate_files(predictions, solutions, challenges)

    # Three tasks to look at: a solved one when there is one, then the first unsolved ones.
    solved = [t for t, v in report["per_task"].items() if v == 1.0]
    unsolved = [t for t, v in report["per_task"].items() if v < 1.0]
    shown = (solved[:1] + unsolved)[:3]
    entries = load_predictions(predictions)
    by_id = {t.id: t for t in load_challenges(challenges, solutions)}
    for tid in shown:
        save_task_png(out_dir / f"task_{tid}.png", by_id[tid], entries.get(tid, []),
                      title=f"task {tid}  ({DATASET} {SPLIT}, {name}: pass@2 {report['per_task'][tid]:.2f})")

    print(f"{DATASET} {SPLIT}: {report['tasks']} tasks, predictor {name}")
    print(format_table(report, name=name))
    print(f"wrote {predictions}, " + ", ".join(str(out_dir / f"task_{t}.png") for t in shown))
    print(f"demo took {time.perf_counter() - start:.1f} s")
    return report
