"""`sage-distill demo` (what `make demo` runs), on the CPU:
1. ARC: the released SAGE model solves the first 10 ARC-AGI-1 evaluation tasks, from an exported challenges
   file, with fewer augmented views than on a GPU (said in the output), scored beside the copy-input and
   all-background baselines and drawn to PNG. The tasks are the first 10 by id, not a chosen subset;
   full-set figures are in the model card.
2. Robot: the released control policy runs a few episodes of two MT10 tasks from pixels, on held-out
   positions, one GIF each; the printed success sits beside the policy's full MT10 figures (its card): one
   task it masters and one it mostly fails, so that the demo shows both."""

from __future__ import annotations

import time
from pathlib import Path

from .errors import ConfigError, SageError, check_output_dir
from .evaluation.model_eval import evaluate_model
from .evaluation.predict import PredictConfig

# The distilled student: stored int4 it scores 19.50% at 8 views, 1.25 points under the int4 teacher, at 2.7x
# the teacher's CPU speed (model cards).
DEFAULT_MODEL = Path("models/sage-arc-small")
DATASET, SPLIT, TASKS, CPU_VIEWS = "arc1", "evaluation", 10, 8
# For the 4-layer student torch is as fast as ONNX Runtime with the same answers (58.7 s for the 10 tasks
# against 59 s), with half the memory and no export; for the 8-layer teacher ONNX Runtime is 1.32x faster.
# docs/BENCHMARKS.md, "ONNX Runtime on the CPU".
DEFAULT_RUNTIME = "torch"
ROBOT_POLICY = Path("models/sage-control")
ROBOT_TASKS, ROBOT_EPISODES = ("door-open-v3", "reach-v3"), 3


def run_demo(out_dir: str | Path, model_dir: str | Path | None = None, tasks: int = TASKS,
             views: int = CPU_VIEWS, runtime: str | None = None, restart: bool = False, robot: bool = True) -> dict:
    """None: DEFAULT_MODEL / DEFAULT_RUNTIME (the CLI passes None when the option is not given)."""
    model_dir, runtime = Path(model_dir or DEFAULT_MODEL), runtime or DEFAULT_RUNTIME
    if not (model_dir / "model.safetensors.index.json").is_file():
        raise SageError(f"{model_dir}: no released model here; run from the repository root or pass --model")
    if runtime not in ("torch", "onnx"):
        raise ConfigError(f"unknown runtime {runtime!r}; use torch or onnx", file="--runtime")
    if robot:
        _check_policy(ROBOT_POLICY)  # before the ARC part writes anything
    check_output_dir(out_dir)
    start = time.perf_counter()
    source = model_dir
    if runtime == "onnx":  # set-up: the fp32 graphs, exported once and cached beside the demo's outputs
        from .export.onnx_graphs import cached_export

        graphs, made = cached_export(model_dir, Path(out_dir) / "onnx-fp32", "fp32")
        print(f"{'exported' if made else 'reusing'} the ONNX graphs in {graphs} "
              f"({time.perf_counter() - start:.0f} s)")
        source = graphs
    print(f"{DATASET} {SPLIT}: the first {tasks} tasks, model {model_dir} on the CPU ({runtime} runtime) with "
          f"{views} views per test input (GPU evaluations use 80+)")
    report = evaluate_model(source, DATASET, SPLIT, out_dir, PredictConfig(views=views, runtime=runtime),
                            limit=tasks, renders=tasks, curves_from=model_dir, restart=restart)
    print(f"wrote {Path(out_dir) / 'scores.json'}, predictions.json and PNGs under {Path(out_dir) / 'renders'}")
    if robot:
        report["robot"] = run_robot_demo(Path(out_dir) / "robot", restart=restart)
    print(f"demo took {time.perf_counter() - start:.0f} s")
    return report


def _check_policy(policy_dir: Path) -> None:
    if not (policy_dir / "config.json").is_file():
        raise SageError(f"{policy_dir}: no released control policy here; run from the repository root or pass "
                        "--no-robot")


def run_robot_demo(out_dir: Path, policy_dir: Path = ROBOT_POLICY, tasks: tuple[str, ...] = ROBOT_TASKS,
                   episodes: int = ROBOT_EPISODES, restart: bool = False) -> dict:
    """The released control policy on held-out positions of `tasks`: every episode in this process, stepped
    together (MuJoCo renders through EGL), one GIF per task."""
    _check_policy(policy_dir)
    from .robot.evaluate import evaluate

    print(f"robot: the control policy {policy_dir} on {episodes} held-out positions of {', '.join(tasks)} "
          "(Meta-World, corner2 camera at 128 px, on the CPU)")
    t0 = time.perf_counter()
    summary = evaluate(policy_dir, list(tasks), "heldout", episodes, out_dir, videos=1, restart=restart)
    for task, rate in summary["per_task"].items():
        print(f"  {task}: {rate:.0%} success ({round(rate * episodes)} of {episodes} episodes)")
    print(f"wrote GIFs under {out_dir / 'videos'} ({time.perf_counter() - t0:.0f} s); the full MT10 figures are "
          f"in {policy_dir / 'MODEL_CARD.md'}")
    return summary
