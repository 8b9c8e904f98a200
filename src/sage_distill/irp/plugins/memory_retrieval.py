"""Memory retrieval: find stored experiences similar to the input, as context.

An anytime search: each step scans the next `chunk` stored embeddings and keeps the k most similar.
Energy = (1 - mean cosine similarity of the top k) / 2, empty slots counted as similarity -1 (so 1 when
nothing is found yet): a found neighbour can only raise the mean, so the energy only falls and the
refiner's lowest-energy state is the latest. The search stops when the store is exhausted or its ATP
runs out. It needs the input's embedding in the context (the vision plugin puts it there)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..contract import HaltDecision, History
from ..memory import Memory


@dataclass
class RetrievalState:
    query: np.ndarray | None
    scanned: int = 0
    total: int = 0
    top: list[tuple[float, int]] = field(default_factory=list)  # (similarity, experience id)
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)  # the store's, at init
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32), repr=False)

    @property
    def done(self) -> bool:
        return self.query is None or self.scanned >= self.total


class MemoryRetrieval:
    name = "memory_retrieval"
    role = "perception"

    def __init__(self, memory: Memory, k: int = 5, chunk: int = 256) -> None:
        self.memory, self.k, self.chunk = memory, k, chunk

    def init_state(self, x: Any, ctx: dict[str, Any]) -> RetrievalState:
        q = ctx.get("embedding")
        ids, matrix = self.memory.embeddings()
        if q is None or len(ids) == 0 or matrix.shape[1] != len(q):
            return RetrievalState(None)
        return RetrievalState(np.asarray(q, np.float32) / (np.linalg.norm(q) + 1e-12), total=len(ids), ids=ids,
                              matrix=matrix)

    def step(self, s: RetrievalState) -> RetrievalState:
        if s.query is None:
            return RetrievalState(None)
        hi = min(s.scanned + self.chunk, s.total)
        sims = s.matrix[s.scanned:hi] @ s.query
        found = s.top + [(float(v), int(i)) for v, i in zip(sims, s.ids[s.scanned:hi], strict=True)]
        return RetrievalState(s.query, hi, s.total, sorted(found, key=lambda t: -t[0])[: self.k], s.ids, s.matrix)

    def energy(self, s: RetrievalState) -> float:
        sims = [t[0] for t in s.top] + [-1.0] * (self.k - len(s.top))
        return (1.0 - float(np.mean(sims))) / 2.0

    def halt(self, history: History, s: RetrievalState) -> HaltDecision:
        return HaltDecision(True, "store scanned") if s.done else HaltDecision(False)

    def context(self, s: RetrievalState) -> dict[str, Any]:
        if not s.top:
            return {}
        surprises = [e.snarc.surprise for _, i in s.top if (e := self.memory.get(i)) is not None]
        return {"neighbours": [i for _, i in s.top], "neighbour_similarity": [v for v, _ in s.top],
                "neighbour_surprise": float(np.mean(surprises)) if surprises else 0.5}
