"""A feature store (`sage-distill extract`: GR00T N1.5 or any Hugging Face vision teacher) as the teacher
of a SAGE student: each training pair's input grid has one stored row (the teacher saw that grid alone,
context "none"); its tokens are averaged to one vector, and every token of the pair's document in a packed
row gets that vector as its target. The store is read once, before any step, and every training input
must have a row: a store that does not cover the run is refused then, not at some later step.
"""

from __future__ import annotations

import numpy as np
import torch

from ..teachers.base import TeacherError, query_key
from ..teachers.store import FeatureStore


class StoreTeacher:
    name = "store"
    signals = frozenset({"features"})

    def __init__(self, folder, inputs: list[np.ndarray], device: str | torch.device = "cpu",
                 chunk: int = 256) -> None:
        store = FeatureStore(folder)
        if store.spec.get("context") != "none":
            raise TeacherError(f"the store was extracted with --context {store.spec.get('context')}; training reads "
                               "stores of grids seen alone (--context none)", file=folder)
        keys = [query_key(g) for g in inputs]
        missing = [i for i, k in enumerate(keys) if k not in store.index]
        if missing:
            raise TeacherError(f"the store has no row for {len(missing)} of the run's {len(keys)} training inputs "
                               f"(first: a {inputs[missing[0]].shape[0]}x{inputs[missing[0]].shape[1]} grid); "
                               "extract the run's datasets and splits", file=folder)
        rows = []
        for start in range(0, len(keys), chunk):
            got = store.lookup(keys[start:start + chunk])["features"]  # [n, T, D]
            rows.append(got.mean(1))
        self.table = torch.cat(rows).to(device)  # [pairs, D]: one vector per training pair
        self.feature_dim = int(self.table.shape[1])
        self.mean, self.std = (t.to(device) for t in store.stats())
        self.device = torch.device(device)

    @torch.no_grad()
    def targets(self, batch: dict[str, torch.Tensor], task_rows: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """{"features": [B, L, D], "mask": [B, L]}: each token's pair's vector; padding has none."""
        pair = batch["pair"].to(self.device)
        return {"features": self.table[pair.clamp(min=0)], "mask": pair >= 0}
