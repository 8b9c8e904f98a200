"""The `sage-distill` command line. This module parses arguments and dispatches; it holds no logic.

The one error path (`main`): a SageError or a usage error prints `error: <file>: <where>: <problem>`
on one line and exits 2; anything unexpected prints `error: unexpected <Type>: <msg>` on one line and
exits 1. `--debug` (or SAGE_DEBUG=1) adds the traceback."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from .errors import SageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distil large models into SAGE, a small iterative-refinement student.")
data_app = typer.Typer(no_args_is_help=True, help="ARC datasets: list, stats, validate, export.")
app.add_typer(data_app, name="data")

Opt = typer.Option
RESTART_HELP = ("Start afresh: delete the partial answers of a killed run (<out>.partial.jsonl) instead of "
                "resuming them.")


@app.callback()
def _root(debug: Annotated[bool, Opt("--debug", help="Show the traceback of an unexpected error "
                                                     "(also SAGE_DEBUG=1).")] = False) -> None:
    """Distil large models into SAGE, a small iterative-refinement student."""
    # `main` reads --debug itself (it must know before the command runs, and after it fails).

# ---------------------------------------------------------------- data (foundation)


@data_app.command("list")
def data_list() -> None:
    """The shipped datasets with their split sizes."""
    from .arc import commands

    commands.list_datasets()


@data_app.command("stats")
def data_stats(dataset: Annotated[str, Opt("--dataset", help="Shipped dataset name (see `data list`).")],
               as_json: Annotated[bool, Opt("--json", help="Print one JSON object.")] = False) -> None:
    """Per split: tasks, demonstration pairs, test inputs, grid sizes, colour frequencies."""
    from .arc import commands

    commands.stats(dataset, as_json)


@data_app.command("validate")
def data_validate(paths: Annotated[list[Path], typer.Argument(help="Task files, task directories or "
                                                                   "challenges files.")]) -> None:
    """Exit 0 when every file is valid; otherwise print one `error:` line per problem and exit 2."""
    from .arc import commands

    problems = commands.validate(paths)
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    if problems:
        raise typer.Exit(2)
    print(f"ok: {len(paths)} path(s) valid")


@data_app.command("export")
def data_export(dataset: Annotated[str, Opt("--dataset")], split: Annotated[str, Opt("--split")],
                out: Annotated[Path, Opt("--out", help="Directory for challenges.json and solutions.json.")]) -> None:
    """Write DIR/challenges.json (no test outputs) and DIR/solutions.json, atomically."""
    from .arc import commands

    commands.export(dataset, split, out)


# ---------------------------------------------------------------- evaluation: baseline / score / render / demo


@app.command("baseline")
def baseline(challenges: Annotated[Path, Opt("--challenges")], out: Annotated[Path, Opt("--out")],
             method: Annotated[str, Opt("--method", help="copy | background")] = "copy") -> None:
    """Write a trivial predictor's submission for a challenges file."""
    from .evaluation import commands

    commands.baseline(challenges, out, method)


@app.command("score")
def score(predictions: Annotated[Path, Opt("--predictions")], solutions: Annotated[Path, Opt("--solutions")],
          challenges: Annotated[Path | None, Opt("--challenges", help="Also score the baselines.")] = None,
          as_json: Annotated[bool, Opt("--json")] = False) -> None:
    """pass@2 (official), pass@1, strict@2 and diagnostics, beside the baselines when challenges are given."""
    from .evaluation import commands

    commands.score(predictions, solutions, challenges, as_json)


@app.command("render")
def render(out: Annotated[Path, Opt("--out", help="PNG file to write.")],
           dataset: Annotated[str | None, Opt("--dataset")] = None,
           split: Annotated[str, Opt("--split", help="With --dataset.")] = "evaluation",
           file: Annotated[Path | None, Opt("--file", help="Task file or challenges file.")] = None,
           task: Annotated[str | None, Opt("--task")] = None,
           predictions: Annotated[Path | None, Opt("--predictions")] = None,
           solutions: Annotated[Path | None, Opt("--solutions")] = None,
           cell_size: Annotated[int, Opt("--cell-size", min=2)] = 16) -> None:
    """Draw a task (pairs, test inputs, solutions, attempts with wrong cells crossed) to PNG."""
    from .evaluation import commands

    commands.render_command(dataset, split, file, task, predictions, solutions, cell_size, out)


@app.command("demo")
def demo(out: Annotated[Path, Opt("--out")] = Path("out/demo"),
         model: Annotated[Path | None, Opt("--model", help="Model folder (default: the released student).")
                          ] = None,
         tasks: Annotated[int, Opt("--tasks", min=1)] = 10,
         views: Annotated[int, Opt("--views", min=1, max=1024)] = 8,
         runtime: Annotated[str | None, Opt("--runtime", help="torch (default) | onnx (graphs exported once "
                                                              "into OUT/onnx-fp32)")] = None,
         restart: Annotated[bool, Opt("--restart", help=RESTART_HELP)] = False,
         robot: Annotated[bool, Opt("--robot/--no-robot", help="Also run the released control policy on two "
                                                                "MT10 tasks.")] = True) -> None:
    """The released SAGE model solves the first ARC-AGI-1 evaluation tasks on CPU, beside the baselines; the
    released control policy runs a few Meta-World episodes."""
    from .demo import run_demo

    run_demo(out, model, tasks, views, runtime, restart, robot)


# ---------------------------------------------------------------- student: train / predict / eval


@app.command("train")
def train(config: Annotated[Path, Opt("--config", help="Training YAML (configs/arc-large.yaml).")],
          resume: Annotated[Path | None, Opt("--resume", help="Run folder to continue.")] = None,
          set_: Annotated[list[str] | None, Opt("--set", help="Override: key.sub=value (YAML value).")] = None,
          allow_changes: Annotated[bool, Opt("--allow-changes", help="Resume even though settings differ from "
                                                                     "the checkpoint's.")] = False,
          ) -> None:
    """Train a SAGE ARC model, or distil a student from a teacher (`teacher:` and `losses:` in the config);
    torchrun for several GPUs."""
    from .training.config import load_config
    from .training.train import train as run
    from .utils.config import parse_overrides

    run(load_config(config, parse_overrides(set_ or [])), resume, allow_changes, config_file=config)


RESCORE_HELP = ("Re-score the N most-voted candidates of each test input by their likelihood summed over "
                "every view (product of experts) before picking two; 0: the vote alone")
ADAPT_MODE_HELP = ("all (default): adaptation trains the new task rows and every shared weight | rows: only "
                   "the new rows (for challenges files whose tasks the model has no rows for; in a file that mixes "
                   "both, the adapted weights decode the unknown tasks only and the known tasks keep the original "
                   "ones)")
RUNTIME_HELP = "torch | onnx (ONNX Runtime on the CPU; --model is then a folder from `sage-distill export`)"


DRAFTS_HELP = ("Tokens guessed per greedy decoding step and checked in it (speculative decoding: the answers are "
               "the one-token-a-step ones); 0: no guesses. Default: 3")
CURVE_HELP = ("Also answer from the first N views of the same decoding, for each N of a comma-separated list "
              "(e.g. 8,32): the pass@2 vs views curve from one run")


def _predict_config(curve: str = "", **options):
    """PredictConfig from the options of predict / eval, its first complaint as one `error:` line."""
    from pydantic import ValidationError

    from .evaluation.predict import PredictConfig

    try:
        counts = [int(n) for n in curve.split(",") if n.strip()]
    except ValueError:
        raise SageError(f"give view counts separated by commas, e.g. 8,32 (got {curve!r})", file="--curve") from None
    try:
        return PredictConfig(curve=counts, **{k: v for k, v in options.items() if v is not None})
    except ValidationError as e:
        first = e.errors()[0]
        raise SageError(f"{first['msg']} (got {first.get('input')})",
                        file=f"--{str(first['loc'][0]).replace('_', '-')}") from None


@app.command("predict")
def predict(model: Annotated[Path, Opt("--model")], challenges: Annotated[Path, Opt("--challenges")],
            out: Annotated[Path, Opt("--out", help="Submission JSON to write.")],
            views: Annotated[int, Opt("--views", help="Augmented views per test input (80+ on a GPU).")] = 8,
            adapt_minutes: Annotated[float, Opt("--adapt-minutes", help="Train embeddings for tasks the model "
                                                                        "has none for.")] = 0.0,
            adapt_mode: Annotated[str, Opt("--adapt-mode", help=ADAPT_MODE_HELP)] = "all",
            minutes: Annotated[float | None, Opt("--minutes", help="Hard budget for the whole command.")] = None,
            device: Annotated[str, Opt("--device", help="cpu | cuda")] = "cpu",
            batch: Annotated[int, Opt("--batch", help="Sequences per decoding batch (0: automatic).")] = 0,
            seed: Annotated[int, Opt("--seed")] = 0,
            limit: Annotated[int | None, Opt("--limit", min=1, help="Only the first N tasks.")] = None,
            runtime: Annotated[str, Opt("--runtime", help=RUNTIME_HELP)] = "torch",
            rescore: Annotated[int, Opt("--rescore", help=RESCORE_HELP)] = 0,
            curve: Annotated[str, Opt("--curve", help=CURVE_HELP)] = "",
            drafts: Annotated[int | None, Opt("--drafts", help=DRAFTS_HELP)] = None,
            restart: Annotated[bool, Opt("--restart", help=RESTART_HELP)] = False) -> None:
    """Solve every task of a challenges file (no answers needed) into an ARC Prize submission; a rerun after a
    kill resumes (same settings only)."""
    from .evaluation.predict import predict_file, summary_line

    cfg = _predict_config(curve, views=views, adapt_minutes=adapt_minutes, minutes=minutes, device=device,
                          batch=batch, seed=seed, runtime=runtime, rescore=rescore, adapt_mode=adapt_mode,
                          drafts=drafts)
    print(summary_line(out, predict_file(model, challenges, out, cfg, limit, restart)))


@app.command("eval")
def evaluate(model: Annotated[Path, Opt("--model")], dataset: Annotated[str, Opt("--dataset")],
             split: Annotated[str, Opt("--split")] = "evaluation",
             out: Annotated[Path, Opt("--out")] = Path("out/eval"),
             views: Annotated[int, Opt("--views")] = 8,
             adapt_minutes: Annotated[float, Opt("--adapt-minutes")] = 0.0,
             adapt_mode: Annotated[str, Opt("--adapt-mode", help=ADAPT_MODE_HELP)] = "all",
             minutes: Annotated[float | None, Opt("--minutes")] = None,
             device: Annotated[str, Opt("--device", help="cpu | cuda")] = "cpu",
             batch: Annotated[int, Opt("--batch")] = 0,
             seed: Annotated[int, Opt("--seed")] = 0,
             limit: Annotated[int | None, Opt("--limit", min=1, help="Only the first N tasks.")] = None,
             runtime: Annotated[str, Opt("--runtime", help=RUNTIME_HELP)] = "torch",
             rescore: Annotated[int, Opt("--rescore", help=RESCORE_HELP)] = 0,
             curve: Annotated[str, Opt("--curve", help=CURVE_HELP)] = "",
             drafts: Annotated[int | None, Opt("--drafts", help=DRAFTS_HELP)] = None,
             restart: Annotated[bool, Opt("--restart", help=RESTART_HELP)] = False) -> None:
    """Export -> predict -> score (beside the baselines) -> renders, in one folder; a rerun after a kill resumes
    its predictions (same settings only)."""
    from .evaluation.model_eval import evaluate_model

    cfg = _predict_config(curve, views=views, adapt_minutes=adapt_minutes, minutes=minutes, device=device,
                          batch=batch, seed=seed, runtime=runtime, rescore=rescore, adapt_mode=adapt_mode,
                          drafts=drafts)
    evaluate_model(model, dataset, split, out, cfg, limit, restart=restart)


@app.command("export")
def export(model: Annotated[Path, Opt("--model", help="SAGE model folder (models/sage-arc).")],
           out: Annotated[Path, Opt("--out", help="New (or empty) folder for the graphs and sage-onnx.json.")],
           precision: Annotated[str, Opt("--precision", help="fp32 | int8 (ONNX Runtime dynamic "
                                                             "quantisation)")] = "fp32") -> None:
    """The ARC model as ONNX graphs: prefill, and one decoding step with past keys and values."""
    from .export.onnx_graphs import export_model

    r = export_model(model, out, precision)
    print(f"wrote {r['out']}: prefill.onnx, decode_step.onnx, sage-onnx.json ({r['precision']}, "
          f"{r['megabytes']} MB, {r['seconds']} s)")


# ---------------------------------------------------------------- teachers: extract / features

features_app = typer.Typer(no_args_is_help=True, help="Teacher feature stores: validate.")
app.add_typer(features_app, name="features")


@app.command("extract")
def extract(teacher: Annotated[str, Opt("--teacher", help="groot | hf (the SAGE teacher runs online, not here)")],
            weights: Annotated[Path, Opt("--weights", help="Local folder: GR00T checkpoint or HF model.")],
            dataset: Annotated[str, Opt("--dataset")], split: Annotated[str, Opt("--split")],
            out: Annotated[Path, Opt("--out", help="Store directory; rerun the same command to resume.")],
            tokenizer: Annotated[Path | None, Opt("--tokenizer", help="groot: local Qwen3 tokenizer folder.")] = None,
            pool: Annotated[str, Opt("--pool", help="none | grid | KxK")] = "grid",
            layer: Annotated[int | None, Opt("--layer", help="groot: LM layers 1-12; hf: hidden_states "
                                                            "index.")] = None,
            context: Annotated[str, Opt("--context", help="none | demos (groot: show demo pairs first)")] = "none",
            batch_size: Annotated[int, Opt("--batch-size")] = 32,
            shard_size: Annotated[int, Opt("--shard-size", help="Grids per shard.")] = 1024,
            device: Annotated[str, Opt("--device")] = "cpu",
            store_dtype: Annotated[str, Opt("--store-dtype", help="bfloat16 | float16 | float32")] = "bfloat16",
            limit: Annotated[int | None, Opt("--limit", help="Only the first N tasks (smoke runs).")] = None) -> None:
    """Run a teacher over a dataset split's input grids (never a test output) into a feature store."""
    from .teachers import extract as ex

    print(ex.extract_command(teacher=teacher, weights=weights, tokenizer=tokenizer, pool=pool, layer=layer,
                             context=context, batch_size=batch_size, shard_size=shard_size, device=device,
                             store_dtype=store_dtype, dataset=dataset, split=split, out=out, limit=limit))


@features_app.command("validate")
def features_validate(store: Annotated[Path, typer.Argument(help="Feature store directory.")]) -> None:
    """Shapes, dtypes, checksums, NaN/Inf, per-dimension statistics, coverage; exit 2 if anything is wrong."""
    import json

    from .teachers.store_check import validate_store

    print(json.dumps(validate_store(store), indent=2))


# ---------------------------------------------------------------- IRP runtime: run / trace

trace_app = typer.Typer(no_args_is_help=True, help="Orchestrator traces: show.")
app.add_typer(trace_app, name="trace")


@app.command("run")
def irp_run(challenges: Annotated[Path, Opt("--challenges", help="ARC Prize challenges file (no answers read).")],
            out: Annotated[Path, Opt("--out", help="Directory: predictions.json, trace.jsonl, summary, memory.")],
            config: Annotated[Path | None, Opt("--config", help="orchestrator.yaml")] = None,
            model: Annotated[Path | None, Opt("--model", help="SAGE model folder (overrides the config).")] = None,
            limit: Annotated[int | None, Opt("--limit", help="Only the first N tasks.")] = None,
            progress: Annotated[bool, Opt("--progress/--no-progress", help="Progress bar on stderr.")] = True,
            ) -> None:
    """Run the IRP orchestrator over a stream of ARC tasks."""
    from .irp.runner import run_command

    print(run_command(config, challenges, out, model, limit, progress))


@trace_app.command("show")
def trace_show(trace: Annotated[Path, typer.Argument(help="trace.jsonl written by `run`.")],
               out: Annotated[Path, Opt("--out", help="PNG: ATP per plugin, energy curves, metabolic state.")]
               ) -> None:
    """Draw a trace's timeline."""
    from .irp.plots import show_command

    print(show_command(trace, out))


# ---------------------------------------- robot: collect / train / dagger / eval / latency / export / convert / show

ROBOT_RUNTIME_HELP = "torch | onnx (ONNX Runtime on the CPU; --policy is then a folder from `robot export`)"
robot_app = typer.Typer(no_args_is_help=True, help="Robot control on Meta-World: expert data, the control student, "
                                                   "closed-loop evaluation, ONNX export, LeRobot datasets.")
app.add_typer(robot_app, name="robot")


@robot_app.command("collect")
def robot_collect(out: Annotated[Path, Opt("--out", help="LeRobot v3.0 dataset folder (resumed if present).")],
                  tasks: Annotated[str, Opt("--tasks", help="mt10, mt50 or comma-separated task names.")] = "mt10",
                  episodes: Annotated[int, Opt("--episodes", help="Successful demonstrations per task.")] = 50,
                  image_size: Annotated[int, Opt("--image-size", help="corner2 frame size; 0 = state only.")] = 128,
                  workers: Annotated[int, Opt("--workers", help="Simulator processes (0 = in this one).")] = 0,
                  after_success: Annotated[int, Opt("--after-success", help="Expert steps kept past the first "
                                                                            "success.")] = 20,
                  ) -> None:
    """Meta-World's scripted experts on seeded train variants, into a LeRobot v3.0 dataset."""
    from .robot.commands import collect_command

    print(collect_command(out, tasks, episodes, image_size, workers, after_success))


@robot_app.command("train")
def robot_train(data: Annotated[Path, Opt("--data", help="LeRobot dataset from `robot collect`.")],
                out: Annotated[Path, Opt("--out", help="Policy folder (resumed if it holds a checkpoint).")],
                config: Annotated[Path | None, Opt("--config", help="YAML of RobotTrainConfig fields.")] = None,
                obs: Annotated[str | None, Opt("--obs", help="pixels or state.")] = None,
                tasks: Annotated[str | None, Opt("--tasks", help="Only these tasks (mt10, mt50 or names).")] = None,
                steps: Annotated[int | None, Opt("--steps")] = None,
                batch: Annotated[int | None, Opt("--batch")] = None,
                minutes: Annotated[float | None, Opt("--minutes", help="Train this long; the schedule runs on the "
                                                                       "wall clock (equal-time arms).")] = None,
                device: Annotated[str | None, Opt("--device", help="cpu or cuda.")] = None,
                ) -> None:
    """Behaviour cloning of the SAGE control policy (flow matching over action chunks)."""
    from .robot.commands import train_command
    from .robot.envs import task_set

    overrides = dict(obs=obs, steps=steps, batch=batch, minutes=minutes, device=device,
                     tasks=task_set(tasks) if tasks else None)
    print(train_command(data, out, config, overrides))


@robot_app.command("dagger")
def robot_dagger(data: Annotated[Path, Opt("--data", help="Starting LeRobot dataset from `robot collect` (read "
                                                          "only; the run appends to its own copy).")],
                 out: Annotated[Path, Opt("--out", help="Run folder: data/, round-NNN/ policies, rounds.jsonl "
                                                        "(resumed if present).")],
                 config: Annotated[Path | None, Opt("--config", help="YAML: RobotTrainConfig fields (each round's "
                                                                     "training), teacher: and dagger:.")] = None,
                 policy: Annotated[Path | None, Opt("--policy", help="Start from this policy folder (`robot "
                                                                     "train`) instead of training round 0.")] = None,
                 rounds: Annotated[int | None, Opt("--rounds", help="DAgger rounds after round 0.")] = None,
                 episodes: Annotated[int | None, Opt("--episodes", help="Student rollouts per task and round.")
                                     ] = None,
                 tasks: Annotated[str | None, Opt("--tasks", help="Only these tasks (mt10, mt50 or names).")] = None,
                 steps: Annotated[int | None, Opt("--steps", help="Training steps per round.")] = None,
                 device: Annotated[str | None, Opt("--device", help="cpu or cuda.")] = None,
                 workers: Annotated[int | None, Opt("--workers", help="Simulator processes (0 = in this one).")
                                    ] = None,
                 ) -> None:
    """On-policy distillation: roll the student out on train positions, label every state with the teacher's
    action, append, train on; resumable by round."""
    from .robot.commands import dagger_command
    from .robot.envs import task_set

    overrides = {"dagger.start": policy, "dagger.rounds": rounds, "dagger.episodes_per_task": episodes,
                 "tasks": task_set(tasks) if tasks else None, "steps": steps, "device": device,
                 "dagger.workers": workers}
    print(dagger_command(data, out, config, overrides))


@robot_app.command("eval")
def robot_eval(policy: Annotated[Path, Opt("--policy", help="Policy folder from `robot train`.")],
               out: Annotated[Path, Opt("--out", help="Folder: episodes.jsonl, summary.json, success.png, videos/.")],
               tasks: Annotated[str, Opt("--tasks", help="mt10, mt50 or comma-separated task names.")] = "mt10",
               protocol: Annotated[str, Opt("--protocol", help="heldout (unseen positions) or fixed (LeRobot's).")
                                   ] = "heldout",
               episodes: Annotated[int, Opt("--episodes", help="Episodes per task.")] = 10,
               device: Annotated[str, Opt("--device")] = "cpu",
               workers: Annotated[int, Opt("--workers", help="Simulator processes (0 = in this one).")] = 0,
               flow_steps: Annotated[int | None, Opt("--flow-steps", help="Euler steps per chunk.")] = None,
               videos: Annotated[int, Opt("--videos", help="GIFs of the first N seeds of each task.")] = 1,
               restart: Annotated[bool, Opt("--restart", help="Start afresh: delete this command's own files in "
                                                              "--out (episodes.jsonl, summary, GIFs) first.")
                                  ] = False,
               runtime: Annotated[str, Opt("--runtime", help=ROBOT_RUNTIME_HELP)] = "torch",
               parallel: Annotated[int, Opt("--parallel", help="Episodes stepped at once (each holds a renderer: "
                                                                "on the CPU ~150 MB apiece).")] = 500,
               ) -> None:
    """Closed-loop success rate per task on held-out seeds, headless; a rerun resumes (same settings only)."""
    from .robot.commands import eval_command

    print(eval_command(policy, tasks, protocol, episodes, out, device, workers, flow_steps, videos, restart,
                       runtime, parallel))


@robot_app.command("latency")
def robot_latency(policy: Annotated[Path, Opt("--policy", help="Policy folder from `robot train`.")],
                  device: Annotated[str, Opt("--device")] = "cpu",
                  task: Annotated[str, Opt("--task", help="Task whose first frame is the input.")] = "push-v3",
                  steps: Annotated[str | None, Opt("--flow-steps", help="Comma-separated Euler step counts "
                                                   "(default 1,2,4,8; onnx: the graph's)")] = None,
                  runtime: Annotated[str, Opt("--runtime", help=ROBOT_RUNTIME_HELP)] = "torch",
                  ) -> None:
    """Milliseconds per action chunk at batch 1 (encode + K Euler steps), median of 30."""
    from .robot.commands import latency_command

    print(latency_command(policy, device, task, steps, runtime))


@robot_app.command("export")
def robot_export(policy: Annotated[Path, Opt("--policy", help="Policy folder from `robot train`.")],
                 out: Annotated[Path, Opt("--out", help="New (or empty) folder for policy.onnx and "
                                                        "policy-onnx.json.")],
                 precision: Annotated[str, Opt("--precision", help="fp32 | int8 (ONNX Runtime dynamic "
                                                                   "quantisation)")] = "fp32",
                 flow_steps: Annotated[int | None, Opt("--flow-steps", help="Euler steps unrolled in the graph "
                                                                            "(default: the policy's).")] = None,
                 ) -> None:
    """The control policy as one ONNX graph per action chunk (observation + noise -> the chunk)."""
    from .robot.commands import export_command

    print(export_command(policy, out, precision, flow_steps))


@robot_app.command("irp")
def robot_irp(policy: Annotated[Path, Opt("--policy", help="Policy folder (the release: models/sage-control).")],
              out: Annotated[Path, Opt("--out", help="New (or empty) folder: trace.jsonl, summary.json.")],
              tasks: Annotated[str, Opt("--tasks", help="mt10, mt50 or comma-separated task names.")] = "door-open-v3",
              episodes: Annotated[int, Opt("--episodes", help="Episodes per task (seeds 0..N-1).")] = 2,
              protocol: Annotated[str, Opt("--protocol", help="heldout or fixed.")] = "heldout",
              device: Annotated[str, Opt("--device")] = "cpu",
              ) -> None:
    """Episodes run by the IRP orchestrator with the control policy as its plugin: one cycle per action
    chunk, each cycle's ATP in the trace (`sage-distill trace show` draws it)."""
    from .irp.control_runner import control_command
    from .robot.envs import task_set

    print(control_command(policy, task_set(tasks), episodes, out, protocol, device))


@robot_app.command("quantize")
def robot_quantize(policy: Annotated[Path, Opt("--policy", help="Policy folder from `robot train`.")],
                   out: Annotated[Path, Opt("--out", help="New (or empty) policy folder.")],
                   precision: Annotated[str, Opt("--precision", help="bf16 | int8 (weights per output row; "
                                                                     "vectors stay fp32)")] = "int8",
                   ) -> None:
    """The policy folder with its weights stored in bf16 or int8; every robot command reads it."""
    from .robot.commands import quantize_command

    print(quantize_command(policy, out, precision))


@robot_app.command("convert")
def robot_convert(src: Annotated[Path, typer.Argument(help="LeRobot v2.0 / v2.1 / v3.0 dataset folder.")],
                  out: Annotated[Path, Opt("--out", help="New LeRobot v3.0 folder.")]) -> None:
    """Rewrite a LeRobot dataset as v3.0, with its known defects fixed and named."""
    from .robot.commands import convert_command

    print(convert_command(src, out))


@robot_app.command("show")
def robot_show(path: Annotated[Path, typer.Argument(help="LeRobot dataset folder.")],
               as_json: Annotated[bool, Opt("--json", help="Print one JSON object.")] = False) -> None:
    """Version, episodes, frames, tasks, features (and which dims vary), fixes applied."""
    from .robot.commands import show_command

    print(show_command(path, as_json))


def _debug(args: list[str]) -> bool:
    return os.environ.get("SAGE_DEBUG", "") not in ("", "0") or args[:1] == ["--debug"]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> None:
    """The entry point: every failure ends here as one `error:` line (exit 2 bad input, 1 a bug)."""
    try:  # typer >= 0.20 vendors click as typer._click
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover
        from click import exceptions as click_exc
    abort = (click_exc.Abort, typer.Abort) if hasattr(click_exc, "Abort") else (typer.Abort,)
    args = list(sys.argv[1:] if argv is None else argv)

    try:
        code = app(args=argv, standalone_mode=False)
    except click_exc.NoArgsIsHelpError as e:  # a bare group: its help, as click would show it
        print(e.ctx.get_help() if e.ctx else "")
        sys.exit(2)
    except click_exc.ClickException as e:  # usage: unknown option, missing option, value of the wrong type
        where = e.ctx.command_path if getattr(e, "ctx", None) is not None else "sage-distill"
        print(f"error: {where}: {_one_line(e.format_message())}", file=sys.stderr)
        sys.exit(2)
    except abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(1)
    except SageError as e:
        if _debug(args):
            traceback.print_exc()
        print(f"error: {e.one_line()}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # a bug, not bad input: say so in one line, traceback on request
        if _debug(args):
            traceback.print_exc()
        msg = _one_line(str(e))
        if len(msg) > 300:
            msg = msg[:297] + "..."
        print(f"error: unexpected {type(e).__name__}: {msg} (rerun with --debug for the traceback)",
              file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


_ = (Path, Annotated)  # used by commands added below each section
