"""Memory retrieval: find stored experiences similar to the input, as context.

An anytime search: each step scans the next `chunk` stored embeddings and keeps the k most similar.
Energy = 1 - mean cosine similarity of the current top k (1 when nothing is found yet), so it only
falls, and the search stops when the store is exhausted or its ATP runs out. It needs the input's
embedding in the context (the vision plugin puts it there)."""

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


class MemoryRetrieval:
    name = "memory_retrieval"
    role = "perception"

    def __init__(self, memory: Memory, k: int = 5, chunk: int = 256) -> None:
        self.memory, self.k, self.chunk = memory, k, chunk
        self._ids, self._m = np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        self._done = False  # for `halt`, which sees only the history

    def init_state(self, x: Any, ctx: dict[str, Any]) -> RetrievalState:
        q = ctx.get("embedding")
        self._ids, self._m = self.memory.embeddings()
        self._done = q is None or len(self._ids) == 0 or self._m.shape[1] != len(q)
        if self._done:
            return RetrievalState(None)
        return RetrievalState(np.asarray(q, np.float32) / (np.linalg.norm(q) + 1e-12), total=len(self._ids))

    def step(self, s: RetrievalState) -> RetrievalState:
        if s.query is None:
            return RetrievalState(None)
        hi = min(s.scanned + self.chunk, s.total)
        sims = self._m[s.scanned:hi] @ s.query
        found = s.top + [(float(v), int(i)) for v, i in zip(sims, self._ids[s.scanned:hi], strict=True)]
        self._done = hi >= s.total
        return RetrievalState(s.query, hi, s.total, sorted(found, key=lambda t: -t[0])[: self.k])

    def energy(self, s: RetrievalState) -> float:
        return 1.0 - float(np.mean([t[0] for t in s.top])) if s.top else 1.0

    def halt(self, history: History) -> HaltDecision:
        return HaltDecision(True, "store scanned") if self._done else HaltDecision(False)

    def context(self, s: RetrievalState) -> dict[str, Any]:
        if not s.top:
            return {}
        surprises = [e.snarc.surprise for _, i in s.top if (e := self.memory.get(i)) is not None]
        return {"neighbours": [i for _, i in s.top], "neighbour_similarity": [v for v, _ in s.top],
                "neighbour_surprise": float(np.mean(surprises)) if surprises else 0.5}
