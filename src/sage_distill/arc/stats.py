"""Dataset statistics for `data stats`: counts, grid sizes and colour frequencies per split."""

from __future__ import annotations

import numpy as np

from .datasets import SPLITS, load_dataset
from .task import MAX_SIZE, NUM_COLORS, Task

# Grid size buckets by the longer side: 1-5, 6-10, ..., 26-30.
SIZE_BINS = [(lo, lo + 4) for lo in range(1, MAX_SIZE + 1, 5)]


def split_stats(tasks: list[Task]) -> dict:
    grids = [g for t in tasks for g in t.all_grids()]
    sizes = dict.fromkeys((f"{lo}-{hi}" for lo, hi in SIZE_BINS), 0)
    colors = np.zeros(NUM_COLORS, np.int64)
    for g in grids:
        lo = (max(g.shape) - 1) // 5 * 5 + 1
        sizes[f"{lo}-{lo + 4}"] += 1
        colors += np.bincount(g.ravel(), minlength=NUM_COLORS)
    total = int(colors.sum())
    return {
        "tasks": len(tasks),
        "pairs": sum(len(t.train) for t in tasks),
        "test_inputs": sum(len(t.test_inputs) for t in tasks),
        "grids": len(grids),
        "grid_size_histogram": sizes,  # grids counted by their longer side
        "max_grid": [max(g.shape[0] for g in grids), max(g.shape[1] for g in grids)] if grids else [0, 0],
        "color_frequencies": {str(c): round(int(n) / total, 6) if total else 0.0 for c, n in enumerate(colors)},
        "cells": total,
    }


def dataset_stats(name: str) -> dict:
    return {"dataset": name, "splits": {split: split_stats(load_dataset(name, split)) for split in SPLITS}}


def format_stats(stats: dict) -> str:
    lines = [f"dataset {stats['dataset']}"]
    for split, s in stats["splits"].items():
        h, w = s["max_grid"]
        lines.append(f"  {split}: {s['tasks']} tasks, {s['pairs']} demonstration pairs, "
                     f"{s['test_inputs']} test inputs, {s['grids']} grids, largest {h}x{w}")
        lines.append("    longer side: " + "  ".join(f"{k}:{v}" for k, v in s["grid_size_histogram"].items()))
        lines.append("    colours:     " + "  ".join(f"{c}:{100 * f:.1f}%" for c, f in s["color_frequencies"].items()))
    return "\n".join(lines)
