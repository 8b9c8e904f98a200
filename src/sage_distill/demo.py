"""`sage-distill demo` (what `make demo` runs): the released SAGE model solves the first 10
ARC-AGI-1 evaluation tasks on the CPU, from an exported challenges file, with fewer augmented views
than on a GPU (said in the output), scored beside the copy-input and all-background baselines and
drawn to PNG. The tasks are the first 10 by id, not a chosen subset; full-set figures are in the
model card."""

from __future__ import annotations

import time
from pathlib import Path

from .errors import SageError
from .evaluation.model_eval import evaluate_model
from .evaluation.predict import PredictConfig

DEFAULT_MODEL = Path("models/sage-arc")
DATASET, SPLIT, TASKS, CPU_VIEWS = "arc1", "evaluation", 10, 8


def run_demo(out_dir: str | Path, model_dir: str | Path = DEFAULT_MODEL, tasks: int = TASKS,
             views: int = CPU_VIEWS) -> dict:
    model_dir = Path(model_dir)
    if not (model_dir / "model.safetensors.index.json").is_file():
        raise SageError(f"{model_dir}: no released model here; run from the repository root or pass --model")
    start = time.perf_counter()
    print(f"{DATASET} {SPLIT}: the first {tasks} tasks, model {model_dir} on the CPU with {views} views per "
          f"test input (GPU evaluations use 80+)")
    report = evaluate_model(model_dir, DATASET, SPLIT, out_dir, PredictConfig(views=views), limit=tasks,
                            renders=tasks)
    print(f"wrote {Path(out_dir) / 'scores.json'}, predictions.json and PNGs under {Path(out_dir) / 'renders'}")
    print(f"demo took {time.perf_counter() - start:.0f} s")
    return report
