"""`sage-distill extract`: run a grid teacher (GR00T backbone, Hugging Face vision model) over a
dataset split's input grids and fill a feature store. The SAGE teacher is not extracted: it reads
the student's packed training sequences online (`SageTeacher.targets`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..arc.datasets import load_dataset
from ..arc.task import Task
from .base import (
    ContextMode,
    Teacher,
    TeacherError,
    TeacherInput,
    canvases_of,
    parse_pool,
    pool_tokens,
    teacher_inputs,
)
from .factory import TeacherConfig, build_teacher
from .store import write_store

log = logging.getLogger(__name__)


def plan(tasks: list[Task], context: ContextMode) -> tuple[list[dict[str, str]], list[TeacherInput]]:
    """Rows in store order (tasks sorted by id, then place), one per distinct teacher input.

    Answers are stripped here, once, before anything reaches a teacher."""
    rows, inputs, seen = [], [], set()
    for task in sorted(tasks, key=lambda t: t.id):
        for ti, place in teacher_inputs(task.without_answers(), context):
            if ti.key in seen:  # the same grid in the same context: one row serves both
                continue
            seen.add(ti.key)
            rows.append({"key": ti.key, "task": task.id, "place": place})
            inputs.append(ti)
    return rows, inputs


def make_compute(teacher: Teacher, inputs: list[TeacherInput], pool: str, batch_size: int,
                 bar: tqdm | None = None) -> Callable[[int, int], dict[str, torch.Tensor]]:
    """Rows [start, start+count) in batches that start at `start`: a shard's batches never depend on
    which shards ran before, which is what makes a resumed store byte-identical."""
    def compute(start: int, count: int) -> dict[str, torch.Tensor]:
        parts: dict[str, list[torch.Tensor]] = {}
        for b in range(start, start + count, batch_size):
            chunk = inputs[b:min(b + batch_size, start + count)]
            queries, context = canvases_of(chunk)
            out = teacher.encode(queries, context if any(context) else None)
            parts.setdefault("features", []).append(pool_tokens(out["features"], teacher.tokens_hw, pool).cpu())
            if "logits" in out:
                parts.setdefault("logits", []).append(out["logits"].cpu())
            if bar is not None:
                bar.update(len(chunk))
        return {k: torch.cat(v) for k, v in parts.items()}
    return compute


def extract(teacher: Teacher, tasks: list[Task], out: str | Path, *, source: dict[str, Any], pool: str = "grid",
            context: ContextMode = "none", batch_size: int = 32, shard_size: int = 1024,
            store_dtype: str = "bfloat16", on_shard: Callable[[int], None] | None = None,
            progress: bool = True) -> dict[str, Any]:
    if not isinstance(teacher, Teacher):
        raise TeacherError(f"the {teacher.name} teacher does not read grids, so it has no feature store: "
                           "it runs online on packed training batches", file="--teacher")
    parse_pool(pool)
    rows, inputs = plan(tasks, context)
    spec = {"teacher": teacher.name, **source, "layer": teacher.layer, "pooling": pool, "context": context,
            "dtype": store_dtype, "feature_dim": teacher.feature_dim, "tokens_hw": list(teacher.tokens_hw),
            "shard_size": shard_size, "tasks": sorted(t.id for t in tasks)}
    with tqdm(total=len(rows), unit="grid", disable=not progress, desc=f"extract {teacher.name}") as bar:
        compute = make_compute(teacher, inputs, pool, batch_size, bar)
        manifest = write_store(out, spec, rows, compute, on_shard=on_shard)
    log.info("store %s: %d rows in %d shards", out, len(rows), len(manifest["shards"]))
    return manifest


def run_extract(cfg: TeacherConfig, dataset: str, split: str, out: str | Path, context: ContextMode = "none",
                batch_size: int = 32, shard_size: int = 1024, store_dtype: str = "bfloat16",
                limit: int | None = None) -> dict[str, Any]:
    """The CLI's entry point: build the teacher from `cfg`, extract a shipped dataset split."""
    tasks = load_dataset(dataset, split)[:limit]
    teacher = build_teacher(cfg)
    source = {"weights": cfg.weights, "dataset": dataset, "split": split}
    return extract(teacher, tasks, out, source=source, pool=cfg.pool, context=context, batch_size=batch_size,
                   shard_size=shard_size, store_dtype=store_dtype)


def extract_command(*, teacher: str, weights: Path, tokenizer: Path | None, pool: str, layer: int | None,
                    context: str, batch_size: int, shard_size: int, device: str, store_dtype: str, dataset: str,
                    split: str, out: Path, limit: int | None) -> str:
    """`sage-distill extract`, options as given on the command line; returns the summary line.
    Every option is checked before a teacher is loaded or anything is written."""
    from ..errors import check_output_dir
    from ..utils.device import check_device

    if context not in ("none", "demos"):
        raise TeacherError(f"must be none or demos, got '{context}'", file="--context")
    if store_dtype not in ("bfloat16", "float16", "float32"):
        raise TeacherError(f"must be bfloat16, float16 or float32, got '{store_dtype}'", file="--store-dtype")
    for option, value, low in (("--batch-size", batch_size, 1), ("--shard-size", shard_size, 1),
                               ("--limit", limit, 1)):
        if value is not None and not low <= value <= 10_000_000:
            raise TeacherError(f"must be a whole number from {low} to 10000000, got {value}", file=option)
    if teacher == "sage":
        raise TeacherError("the SAGE teacher is not extracted: it reads the student's packed training sequences "
                           "online; extract supports groot and hf", file="--teacher")
    if teacher not in ("groot", "hf"):
        raise TeacherError(f"must be groot or hf, got '{teacher}'", file="--teacher")
    parse_pool(pool)
    check_device(device)
    if not weights.exists():
        raise TeacherError(f"{weights} not found: give a local folder", file="--weights")
    if tokenizer is not None and not tokenizer.exists():
        raise TeacherError(f"{tokenizer} not found: give a local folder", file="--tokenizer")
    check_output_dir(out)
    load_dataset(dataset, split)  # a bad dataset or split name, before the teacher is loaded
    try:
        cfg = TeacherConfig(kind=teacher, weights=str(weights), tokenizer=str(tokenizer) if tokenizer else None,
                            layer=layer, pool=pool, device=device)
    except ValueError as e:
        raise TeacherError(f"bad teacher options: {' '.join(str(e).split())}") from None
    manifest = run_extract(cfg, dataset, split, out, context, batch_size, shard_size,  # type: ignore[arg-type]
                           store_dtype, limit)
    shape = manifest["shards"][0]["shapes"]["features"][1:]
    n_rows, n_shards = len(manifest["rows"]), len(manifest["shards"])
    return f"ok: {n_rows} grids, features {shape} {store_dtype}, {n_shards} shards -> {out}"
