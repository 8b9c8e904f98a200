"""Scores for ARC predictions. The official figure is pass@2: per task, the fraction of its test
inputs for which attempt_1 or attempt_2 equals the solution exactly, averaged over the tasks of the
solutions file. Tasks or entries missing from the predictions score zero and are listed, never
dropped: dropping them would raise the average. Diagnostics (pixel, foreground, per-colour, shape)
look at attempt_1 only, so a second guess cannot flatter them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..arc.datasets import load_challenges, load_solutions
from ..arc.task import NUM_COLORS
from ..errors import PredictionError
from .baselines import BASELINES
from .submission import Submission, load_predictions

Solutions = dict[str, list[np.ndarray]]


def _same(a: np.ndarray | None, b: np.ndarray) -> bool:
    return a is not None and a.shape == b.shape and bool(np.array_equal(a, b))


def recoloured(a: np.ndarray | None, b: np.ndarray) -> bool:
    """`a` is not `b` but equals it up to a one-to-one renaming of colours (the miss that views which
    scramble a colour the inputs never show produce)."""
    if a is None or a.shape != b.shape or np.array_equal(a, b):
        return False
    pairs = set(zip(a.ravel().tolist(), b.ravel().tolist(), strict=True))
    return len({x for x, _ in pairs}) == len(pairs) == len({y for _, y in pairs})


def _ratio(num: float, den: float) -> float:
    return float(num) / den if den else 0.0


def score_submission(predictions: Submission, solutions: Solutions) -> dict:
    """All figures for one submission against the solutions (task id -> answer grids in order)."""
    if not solutions:
        raise PredictionError("the solutions hold no tasks: nothing to score")
    task_pass2, task_pass1, strict, recolour = {}, [], 0, 0
    missing_tasks, missing_entries = [], []
    shape_right = entries = 0
    cells = cells_right = fg_cells = fg_right = 0
    true_count = np.zeros(NUM_COLORS, np.int64)  # per colour, over shape-matched attempt_1 grids
    pred_count = np.zeros(NUM_COLORS, np.int64)
    both_count = np.zeros(NUM_COLORS, np.int64)

    for tid in sorted(solutions):
        answers = solutions[tid]
        preds = predictions.get(tid)
        if preds is None:
            missing_tasks.append(tid)
            preds = []
        elif len(preds) > len(answers):  # cannot tell which entry answers which input
            raise PredictionError(f"task {tid}: {len(preds)} prediction entries for {len(answers)} test inputs")
        hits2 = hits1 = 0
        for i, truth in enumerate(answers):
            entries += 1
            if i >= len(preds):
                if tid not in missing_tasks:
                    missing_entries.append(f"{tid}[{i}]")
                continue
            a1, a2 = preds[i].get("attempt_1"), preds[i].get("attempt_2")
            hits1 += _same(a1, truth)
            hits2 += _same(a1, truth) or _same(a2, truth)
            right = _same(a1, truth) or _same(a2, truth)
            recolour += not right and (recoloured(a1, truth) or recoloured(a2, truth))
            if a1 is None or a1.shape != truth.shape:
                continue
            shape_right += 1
            eq = a1 == truth
            cells += truth.size
            cells_right += int(eq.sum())
            fg = truth != 0
            fg_cells += int(fg.sum())
            fg_right += int((eq & fg).sum())
            true_count += np.bincount(truth.ravel(), minlength=NUM_COLORS)[:NUM_COLORS]
            pred_count += np.bincount(a1.ravel(), minlength=NUM_COLORS)[:NUM_COLORS]
            both_count += np.bincount(truth[eq].ravel(), minlength=NUM_COLORS)[:NUM_COLORS]
        task_pass2[tid] = hits2 / len(answers)
        task_pass1.append(hits1 / len(answers))
        strict += hits2 == len(answers)

    n = len(solutions)
    return {
        "tasks": n,
        "test_inputs": entries,
        "pass@2": sum(task_pass2.values()) / n,
        "right_up_to_recolouring": recolour,  # test inputs missed whose attempt is the answer recoloured
        "pass@1": sum(task_pass1) / n,
        "strict@2": strict / n,
        "pixel_accuracy": _ratio(cells_right, cells),
        "pixel_cells": cells,
        "foreground_accuracy": _ratio(fg_right, fg_cells),
        "foreground_cells": fg_cells,
        "shape_accuracy": _ratio(shape_right, entries),
        "per_color": _per_color(true_count, pred_count, both_count),
        "missing": {"tasks": missing_tasks, "entries": missing_entries},
        "extra_tasks": sorted(set(predictions) - set(solutions)),
        "per_task": task_pass2,
    }


def _per_color(true: np.ndarray, pred: np.ndarray, both: np.ndarray) -> dict[str, dict]:
    """Accuracy is recall (true cells of that colour predicted right); None where undefined."""
    out = {}
    for c in range(NUM_COLORS):
        recall = both[c] / true[c] if true[c] else None
        precision = both[c] / pred[c] if pred[c] else None
        if recall is None and precision is None:
            f1 = None
        elif not recall or not precision:
            f1 = 0.0
        else:
            f1 = 2 * precision * recall / (precision + recall)
        out[str(c)] = {"accuracy": None if recall is None else float(recall),
                       "f1": None if f1 is None else float(f1), "support": int(true[c])}
    return out


def evaluate_files(predictions: str | Path, solutions: str | Path, challenges: str | Path | None = None) -> dict:
    """Score a predictions file; with the challenges, also score both baselines in the same run."""
    answers = load_solutions(solutions)
    report = score_submission(load_predictions(predictions), answers)
    if challenges is not None:
        # Loading with the solutions checks the two files agree on tasks and test counts.
        tasks = [t.without_answers() for t in load_challenges(challenges, solutions)]
        report["baselines"] = {name: _summary(score_submission(fn(tasks), answers))
                               for name, fn in BASELINES.items()}
    return report


def _summary(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("per_task", "extra_tasks")}


TABLE_ROWS = [("pass@2 (official)", "pass@2"), ("pass@1", "pass@1"), ("strict@2", "strict@2"),
              ("pixel accuracy", "pixel_accuracy"), ("foreground accuracy", "foreground_accuracy"),
              ("shape accuracy", "shape_accuracy")]


def format_table(report: dict, name: str = "model") -> str:
    """The model's figures beside every baseline in the report, one metric a row, as percentages."""
    baselines = report.get("baselines", {})
    if name in baselines:  # a predictions file called copy.json must not hide behind the copy baseline
        name = f"{name} (model)"
    columns = {name: report, **baselines}
    width = max(12, *(len(c) + 2 for c in columns))
    lines = [f"{'metric':<22}" + "".join(f"{c:>{width}}" for c in columns)]
    for label, key in TABLE_ROWS:
        lines.append(f"{label:<22}" + "".join(f"{100 * r[key]:>{width - 1}.2f}%" for r in columns.values()))
    lines.append(f"{'tasks / test inputs':<22}" + "".join(
        f"{str(r['tasks']) + ' / ' + str(r['test_inputs']):>{width}}" for r in columns.values()))
    colors = "  ".join(f"{c}:{_pct(v['f1'])}" for c, v in report["per_color"].items())
    lines.append(f"per-colour F1 ({name}): {colors}")
    missing = report["missing"]
    if missing["tasks"] or missing["entries"]:
        lines.append(f"MISSING (scored zero): {len(missing['tasks'])} tasks, {len(missing['entries'])} entries: "
                     + ", ".join(missing["tasks"][:10] + missing["entries"][:10])
                     + (" ..." if len(missing["tasks"]) > 10 or len(missing["entries"]) > 10 else ""))
    if report.get("extra_tasks"):
        lines.append(f"ignored: {len(report['extra_tasks'])} predicted tasks not in the solutions")
    if "baselines" not in report:
        lines.append("(no baselines: pass --challenges to score copy/background beside the model)")
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"
