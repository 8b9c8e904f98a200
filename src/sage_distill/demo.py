"""`sage-distill demo` (what `make demo` runs): the released small SAGE student solves the first
10 ARC-AGI-1 evaluation tasks on the CPU, from an exported challenges file, and the answers are
scored beside the copy-input and all-background baselines and drawn to PNG.

The tasks are the first 10 by id, not a chosen subset; the full-set figures are in the model card."""

from __future__ import annotations

import time
from pathlib import Path

from .errors import SageError
from .evaluation.model_eval import evaluate_model

DEFAULT_MODEL = Path("models/sage-arc-small")
DATASET, SPLIT, TASKS = "arc1", "evaluation", 10


def run_demo(out_dir: str | Path, model_dir: str | Path = DEFAULT_MODEL, tasks: int = TASKS) -> dict:
    model_dir = Path(model_dir)
    if not (model_dir / "model.safetensors").is_file():
        raise SageError(f"{model_dir}: no released model here; run from the repository root or pass --model")
    start = time.perf_counter()
    print(f"{DATASET} {SPLIT}: the first {tasks} tasks, model {model_dir} on the CPU")
    report = evaluate_model(model_dir, DATASET, SPLIT, out_dir, device="cpu", limit=tasks, renders=tasks)
    print(f"wrote {Path(out_dir) / 'scores.json'}, predictions.json and PNGs under {Path(out_dir) / 'renders'}")
    print(f"demo took {time.perf_counter() - start:.0f} s")
    return report
