"""`sage-distill run`: the orchestrator over a stream of ARC tasks.

Writes into --out: predictions.json (ARC Prize format), trace.jsonl, summary.json and summary.txt
(per plugin: ATP, steps, trust; cycles in each metabolic state), memory.sqlite, and WAV files when
speech is on. Idle cycles can be inserted into the stream (config `stream`) so REST and DREAM occur.
With config `solutions`, each task's truth is known to the runner: after the task's cycle every
solver's answer is scored (pass@2) and fed back (`Orchestrator.feedback`: trust at `rate_truth`).
The orchestrator itself only ever sees the task without its answers.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..arc.datasets import load_challenges
from ..arc.task import Task
from ..errors import ConfigError, check_output_dir
from ..evaluation.scoring import score_submission
from ..evaluation.submission import parse_predictions, write_predictions
from ..student.checkpoint import load_sage_model
from ..student.modeling_sage import SageModel
from ..utils.io import atomic_write_json, atomic_write_text
from .config import RunConfig
from .contract import Plugin
from .memory import Memory
from .orchestrator import Orchestrator
from .plugins.arc_solver import ArcSolver, task_to_memory
from .plugins.memory_retrieval import MemoryRetrieval
from .plugins.speech import Speech
from .plugins.vision import Vision
from .trace import TraceWriter


@dataclass
class Runtime:
    orchestrator: Orchestrator
    memory: Memory
    trace: TraceWriter
    solver: ArcSolver | None

    def close(self) -> None:
        self.orchestrator.close()
        self.trace.close()
        self.memory.close()


def build_runtime(cfg: RunConfig, model: SageModel, fingerprints: list[str], out: Path) -> Runtime:
    """Plugins and orchestrator from the config; `fingerprints` name the model's task-embedding rows."""
    torch.manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    mem_path = Path(cfg.memory)
    memory = Memory(mem_path if mem_path.is_absolute() else out / mem_path)
    trace = TraceWriter(out / "trace.jsonl")
    p = cfg.plugins
    plugins: list[Plugin] = []
    steps: dict[str, int] = {}
    if p.vision.enabled:
        plugins.append(Vision(model, p.vision.eps))
        steps["vision"] = 64
    if p.memory_retrieval.enabled:
        plugins.append(MemoryRetrieval(memory, p.memory_retrieval.k, p.memory_retrieval.chunk))
        steps["memory_retrieval"] = 1_000_000
    solver = None
    if p.arc_solver.enabled:
        a = p.arc_solver
        solver = ArcSolver(model, fingerprints, a.max_views, a.views_per_step, a.energy_threshold, a.min_views,
                           a.adapt_steps, a.adapt_steps_per_call, a.adapt_lr, a.dream_steps)
        plugins.append(solver)
        steps["arc_solver"] = solver.steps_needed()
    if p.speech.enabled:
        plugins.append(Speech(out / "speech", p.speech.voice))
        steps["speech"] = 1
    orch = Orchestrator(plugins, cfg.orchestrator, memory, trace, serialize=task_to_memory, max_steps=steps)
    return Runtime(orch, memory, trace, solver)


def run_stream(rt: Runtime, tasks: list[Task], cfg: RunConfig,
               progress: bool = True) -> dict[str, list[dict[str, Any]]]:
    """One cycle per task (plus configured idle cycles); returns the predictions. The progress bar
    (stderr) shows tasks done and the ATP spent so far."""
    predictions: dict[str, list[dict[str, Any]]] = {}
    spent = 0.0
    with tqdm(total=len(tasks), unit="task", desc="run", disable=not progress, file=sys.stderr) as bar:
        for i, task in enumerate(tasks, 1):
            res = rt.orchestrator.cycle(task.without_answers(), key=task.id)
            spent += res.spent
            if res.answer is None:  # no solver ran (e.g. budget exhausted): the copy-input answer, as predict
                res.answer = [{"attempt_1": g.tolist(), "attempt_2": g.tolist()} for g in task.test_inputs]
            predictions[task.id] = res.answer
            if task.has_answers and res.chosen is not None:  # the truth is known: late feedback
                rt.orchestrator.feedback(task.id, lambda value, t=task: pass_at_2(value, t))
            if cfg.stream.idle_every and i % cfg.stream.idle_every == 0:
                for _ in range(cfg.stream.idle_cycles):
                    spent += rt.orchestrator.cycle(None).spent
            bar.set_postfix(atp=f"{spent:.0f}", state=res.state.value, refresh=False)
            bar.update(1)
    return predictions


def pass_at_2(answer: list[dict[str, Any]], task: Task) -> float:
    """The official pass@2 of one task's answer (share of its test inputs right in either attempt)."""
    return score_submission(parse_predictions({task.id: answer}), {task.id: list(task.test_outputs)})["pass@2"]


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{'plugin':<18}{'runs':>6}{'ATP':>12}{'steps':>8}{'trust':>8}"]
    for name, s in summary["plugins"].items():
        lines.append(f"{name:<18}{int(s['runs']):>6}{s['atp']:>12.1f}{int(s['steps']):>8}{s['trust']:>8.3f}")
    lines.append("")
    lines.append("cycles per metabolic state: " + ", ".join(f"{k} {v}" for k, v in summary["time_in_state"].items()))
    return "\n".join(lines)


def check_run(config: Path | None, challenges: Path, out: Path, model_dir: Path | None,
              limit: int | None) -> tuple[RunConfig, Path, list[Task]]:
    """Every input checked before anything is loaded or written: config, model folder, device,
    output folder, challenges and --limit."""
    from ..utils.device import check_device
    from .config import load_config

    if limit is not None and limit < 1:
        raise ConfigError(f"must be at least 1, got {limit}", file="--limit")
    cfg = load_config(config)
    folder = model_dir or (Path(cfg.model) if cfg.model else None)
    if folder is None:
        raise ConfigError("no model: give --model DIR or set `model:` in the config", file=config or "--model")
    check_device(cfg.device, f"{config}: device" if config else "device")
    check_output_dir(out)
    mem = Path(cfg.memory)
    if mem.is_absolute():
        if mem.is_dir():
            raise ConfigError(f"{mem} is a directory; give a file", file=config, where="memory")
        check_output_dir(mem.parent, "memory")
    elif (out / mem).is_dir():
        raise ConfigError(f"{out / mem} is a directory; give a file", file=config, where="memory")
    if (out / "trace.jsonl").is_dir() or (out / "predictions.json").is_dir():
        raise ConfigError(f"{out} holds a directory where an output file goes", file="--out")
    tasks = load_challenges(challenges, cfg.solutions)  # with solutions: answers attached, for feedback only
    if not tasks:
        raise ConfigError("no tasks in the challenges file", file=challenges)
    return cfg, folder, tasks[:limit] if limit else tasks


def run_command(config: Path | None, challenges: Path, out: Path, model_dir: Path | None,
                limit: int | None = None, progress: bool = True) -> str:
    cfg, folder, tasks = check_run(config, challenges, out, model_dir, limit)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, fingerprints = load_sage_model(folder, cfg.device)
    rt = build_runtime(cfg, model, fingerprints, out)
    try:
        predictions = run_stream(rt, tasks, cfg, progress)
        summary = rt.orchestrator.summary()
    finally:
        rt.close()
    write_predictions(out / "predictions.json", predictions)
    atomic_write_json(out / "summary.json", summary, indent=2)
    text = format_summary(summary)
    atomic_write_text(out / "summary.txt", text + "\n")
    return text + f"\n\nwrote {out / 'predictions.json'}, {out / 'trace.jsonl'}, {out / 'summary.txt'}"
