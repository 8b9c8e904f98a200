"""Persistent experience memory: SQLite in WAL mode, one row per experience.

Each row holds the input's embedding (float32 bytes), the input and output (JSON), the energy trace,
the outcome when known, and SNARC salience. Every write is one transaction, so a process killed
mid-write leaves the committed rows intact and no partial row (tests/test_irp_memory.py kills a
writer with SIGKILL). In WAL mode synchronous=NORMAL already survives a process kill; `power_safe`
(synchronous=FULL) adds an fsync per commit, which also survives power loss but costs ~3 ms a write.
Retrieval is cosine similarity over the embeddings, kept in an in-process matrix extended with the
rows added since the last read.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SageError
from .salience import DIMENSIONS, Snarc

SCHEMA = """
CREATE TABLE IF NOT EXISTS experiences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    created REAL NOT NULL,
    embedding BLOB NOT NULL,
    input TEXT NOT NULL,
    output TEXT,
    energy_trace TEXT NOT NULL,
    outcome REAL,
    surprise REAL NOT NULL, novelty REAL NOT NULL, arousal REAL NOT NULL, reward REAL NOT NULL,
    conflict REAL NOT NULL, salience REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS experiences_key ON experiences(key);
CREATE INDEX IF NOT EXISTS experiences_salience ON experiences(salience);
"""


@dataclass
class Experience:
    id: int
    key: str
    embedding: np.ndarray
    input: Any
    output: Any
    energy_trace: list[float]
    outcome: float | None
    snarc: Snarc
    salience: float


class Memory:
    def __init__(self, path: str | Path, power_safe: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={'FULL' if power_safe else 'NORMAL'}")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise SageError(f"{self.path}: cannot open memory store: {e}") from None
        self.lock = threading.Lock()
        self._ids: np.ndarray = np.zeros(0, np.int64)
        self._matrix: np.ndarray = np.zeros((0, 0), np.float32)

    def close(self) -> None:
        self.db.close()

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM experiences").fetchone()[0])

    def add(self, key: str, embedding: np.ndarray, input: Any, output: Any, energy_trace: list[float],
            snarc: Snarc, salience: float, outcome: float | None = None) -> int:
        emb = np.ascontiguousarray(embedding, dtype=np.float32)
        row = (key, time.time(), emb.tobytes(), json.dumps(input), json.dumps(output), json.dumps(energy_trace),
               outcome, *(float(getattr(snarc, d)) for d in DIMENSIONS), float(salience))
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                cur = self.db.execute(
                    "INSERT INTO experiences (key, created, embedding, input, output, energy_trace, outcome, "
                    "surprise, novelty, arousal, reward, conflict, salience) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return int(cur.lastrowid)

    def set_outcome(self, key: str, outcome: float, snarc_update: dict[str, float], salience_fn: Any) -> int:
        """Record a late outcome for every experience of `key`, recomputing surprise, reward and salience."""
        changed = 0
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for exp in self._rows("WHERE key = ?", (key,)):
                    s = exp.snarc
                    for k, v in snarc_update.items():
                        setattr(s, k, v)
                    self.db.execute("UPDATE experiences SET outcome=?, surprise=?, reward=?, salience=? WHERE id=?",
                                    (outcome, s.surprise, s.reward, float(salience_fn(s)), exp.id))
                    changed += 1
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return changed

    def _rows(self, where: str = "", args: tuple = ()) -> list[Experience]:
        cur = self.db.execute(
            "SELECT id, key, embedding, input, output, energy_trace, outcome, surprise, novelty, arousal, reward, "
            f"conflict, salience FROM experiences {where}", args)
        return [Experience(r[0], r[1], np.frombuffer(r[2], np.float32).copy(), json.loads(r[3]),
                           json.loads(r[4]) if r[4] is not None else None, json.loads(r[5]), r[6],
                           Snarc(*r[7:12]), r[12]) for r in cur.fetchall()]

    def get(self, id: int) -> Experience | None:
        rows = self._rows("WHERE id = ?", (id,))
        return rows[0] if rows else None

    def most_salient(self, limit: int, min_salience: float = 0.0) -> list[Experience]:
        return self._rows("WHERE salience >= ? ORDER BY salience DESC, id LIMIT ?", (min_salience, limit))

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids [N], unit-normalised embeddings [N, D]); only rows added since the last call are read."""
        last = int(self._ids[-1]) if len(self._ids) else 0
        rows = self.db.execute("SELECT id, embedding FROM experiences WHERE id > ? ORDER BY id", (last,)).fetchall()
        if rows:
            m = np.stack([np.frombuffer(r[1], np.float32) for r in rows])
            m = m / (np.linalg.norm(m, axis=1, keepdims=True) + 1e-12)
            ids = np.array([r[0] for r in rows], np.int64)
            same = len(self._ids) and self._matrix.shape[1] == m.shape[1]
            self._ids = np.concatenate([self._ids, ids]) if same else ids
            self._matrix = np.concatenate([self._matrix, m]) if same else m
        return self._ids, self._matrix

