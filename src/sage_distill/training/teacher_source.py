"""Where a distillation run's teacher signals come from: a teacher run online on each batch, or a
feature store read by the batch's grids. Either way the teacher sees only `batch["inputs"]`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .data import ExampleTable

TeacherFn = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def make_teacher_source(spec: dict[str, Any], table: ExampleTable, device: torch.device,
                        ) -> tuple[TeacherFn, dict[str, Any]]:
    """`spec` is the run config's `teacher:` section: `{store: DIR}` or a TeacherConfig
    (`{kind: sage|groot|hf, weights: DIR, pool: grid, ...}`). Returns the per-batch function and the
    context the loss terms need (teacher feature size and, from a store, its statistics)."""
    from ..teachers import batch_keys, build_teacher, teacher_targets

    if "store" in spec:
        from ..teachers.store import FeatureStore

        store = FeatureStore(spec["store"])
        mean, std = store.stats()

        def from_store(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v.to(device) for k, v in store.lookup(batch_keys(batch["inputs"])).items()}

        return from_store, {"teacher_dim": mean.shape[-1], "teacher_mean": mean.to(device),
                            "teacher_std": std.to(device)}

    teacher = build_teacher({"device": str(device), **spec})
    pool = spec.get("pool", "grid")

    def online(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        codes = None
        if hasattr(teacher, "codes_for"):  # a SAGE teacher conditions on its own codes for the task
            rows = batch["code_index"].tolist()
            codes = teacher.codes_for([table.fingerprints[i // table.variants] for i in rows],
                                      [i % table.variants for i in rows])
        return teacher_targets(teacher, batch, pool, codes)

    return online, {"teacher_dim": teacher.feature_dim}
