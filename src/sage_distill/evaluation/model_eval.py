"""`sage-distill eval`: export -> predict (from challenges only) -> score -> renders -> curves.

The predictor never holds the solutions: it reads the exported challenges file, and the solutions
file is opened only by the scorer afterwards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..arc.datasets import load_challenges
from ..arc.export import export_split
from ..arc.render import save_task_png
from ..student.checkpoint import load_model
from ..utils.device import check_device
from ..utils.io import atomic_write_json
from .predict import PredictConfig, check_partial_settings, check_runtime, predict_file, resume_settings, summary_line
from .scoring import evaluate_files, format_table
from .submission import load_predictions


def evaluate_model(model_dir: str | Path, dataset: str, split: str, out_dir: str | Path, cfg: PredictConfig,
                   limit: int | None = None, renders: int = 6, curves_from: str | Path | None = None,
                   restart: bool = False) -> dict:
    out = Path(out_dir)
    check_device(cfg.device)  # everything that can be refused is refused before the export writes
    check_runtime(model_dir, cfg)
    if cfg.runtime == "torch":
        load_model(model_dir)
    if not restart:  # a killed eval's answers: the same model and options, or a refusal before anything is written
        check_partial_settings(out / "predictions.json", resume_settings(model_dir, cfg, None))
    challenges, solutions = export_split(dataset, split, out / "data")
    if limit is not None:  # a subset, e.g. for the CPU demo: cut both files to the first `limit` tasks
        for path in (challenges, solutions):
            data = json.loads(path.read_text())
            atomic_write_json(path, {k: data[k] for k in sorted(data)[:limit]})
    stats = predict_file(model_dir, challenges, out / "predictions.json", cfg, restart=restart)
    print(summary_line(out / "predictions.json", stats))
    report = evaluate_files(out / "predictions.json", solutions, challenges)
    report["inference"] = {**stats, "device_name": "cpu" if cfg.device == "cpu" else torch.cuda.get_device_name()}
    if cfg.also():  # the same decodings ranked by the vote alone, or voted over their first N views
        report["also"] = {}
        for name in cfg.also():
            r = evaluate_files(out / f"predictions.{name}.json", solutions)
            report["also"][name] = {k: r[k] for k in ("pass@2", "pass@1")}
        print("from the same decoding: " + ", ".join(f"{name} pass@2 {r['pass@2']:.2%}"
                                                     for name, r in report["also"].items())
              + f"; the submission ({cfg.views} views{', re-scored' if cfg.rescore else ''}) {report['pass@2']:.2%}")
    atomic_write_json(out / "scores.json", report, indent=1)
    _render_samples(report, challenges, solutions, out / "predictions.json", out / "renders", renders)
    _copy_curves(Path(curves_from or model_dir), out)
    print(format_table(report, name=Path(curves_from or model_dir).name))
    return report


def _render_samples(report: dict, challenges: Path, solutions: Path, predictions: Path, folder: Path,
                    count: int) -> None:
    tasks = {t.id: t for t in load_challenges(challenges, solutions)}
    preds = load_predictions(predictions)
    per_task = report.get("per_task", {})
    solved = [t for t, score in per_task.items() if score > 0][: count // 2]
    failed = [t for t, score in per_task.items() if score == 0][: count - len(solved)]
    for tag, ids in (("solved", solved), ("failed", failed)):
        for tid in ids:
            save_task_png(folder / f"{tag}-{tid}.png", tasks[tid], preds.get(tid))


def _copy_curves(model_dir: Path, out: Path) -> None:
    metrics = model_dir / "metrics.jsonl"
    if not metrics.is_file():
        return
    shutil.copy(metrics, out / "metrics.jsonl")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    panels = (("loss", "output-token cross-entropy (nats)"), ("token_acc", "output-token accuracy (fraction)"),
              ("exact", "teacher-forced exact sequences (fraction)"))
    for ax, (key, label) in zip(axes, panels, strict=True):
        ax.plot([r["step"] for r in rows if key in r], [r[key] for r in rows if key in r])
        ax.set_title(label)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(label.split(" (")[1].rstrip(")"))
    fig.tight_layout()
    fig.savefig(out / "training_curves.png", dpi=100)
    plt.close(fig)
