"""Experience memory: persistence across restarts, retrieval by similarity, survival of a kill mid-write."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sage_distill.irp.contract import Budget
from sage_distill.irp.memory import Memory
from sage_distill.irp.plugins.memory_retrieval import MemoryRetrieval
from sage_distill.irp.refine import refine
from sage_distill.irp.salience import Snarc, novelty


def snarc(v: float = 0.5) -> Snarc:
    return Snarc(v, v, v, 0.0, v)


def nearest(m: Memory, embedding: np.ndarray, k: int) -> list[int]:
    """The run's retrieval: the memory_retrieval plugin, scanning one stored embedding per step."""
    state, trace = refine(MemoryRetrieval(m, k, chunk=1), None, {"embedding": embedding}, Budget(max_steps=100))
    assert trace.halt_reason == "store scanned" and len(trace.steps) == len(m)
    assert all(s.delta <= 0 for s in trace.steps)  # energy only falls: the result is the full scan
    return [i for _, i in state.top]


def test_roundtrip_restart_and_nearest(tmp_path: Path) -> None:
    m = Memory(tmp_path / "m.sqlite")
    a = m.add("a", np.array([1, 0, 0], np.float32), {"x": 1}, [[1]], [3.0, 1.0], snarc(0.2), 0.2)
    m.add("b", np.array([0, 1, 0], np.float32), {"x": 2}, None, [2.0], snarc(0.9), 0.9)
    m.add("c", np.array([0.9, 0.1, 0], np.float32), {"x": 3}, [[3]], [1.0], snarc(0.5), 0.5)
    assert nearest(m, np.array([1, 0.05, 0], np.float32), k=2) == [a, 3]
    m.close()
    m = Memory(tmp_path / "m.sqlite")  # a restart
    assert len(m) == 3
    e = m.get(a)
    assert e.input == {"x": 1} and e.output == [[1]] and e.energy_trace == [3.0, 1.0] and e.outcome is None
    assert [x.key for x in m.most_salient(2)] == ["b", "c"]
    assert m.set_outcome("a", 1.0, {"surprise": 0.0, "reward": 1.0}, lambda s: s.total()) == 1
    e = m.get(a)
    assert e.outcome == 1.0 and e.snarc.reward == 1.0 and e.salience == e.snarc.total()
    assert m.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert nearest(m, np.array([0, 1, 0.05], np.float32), k=5) == [2, 3, a]
    m.close()


def test_novelty_is_distance_to_nearest() -> None:
    assert novelty([1.0, 0.0]) == 0.0  # the same direction as a stored embedding
    assert abs(novelty([0.0, -1.0]) - 0.5) < 1e-6  # 90 degrees from the nearest
    assert novelty([-1.0]) == 1.0 and novelty([]) == 1.0 and novelty(None) == 1.0  # opposite; empty memory


WRITER = """
import sys, numpy as np
from sage_distill.irp.memory import Memory
from sage_distill.irp.salience import Snarc
m = Memory(sys.argv[1])
big = {"pad": "x" * 200_000}  # large rows make a kill land inside a write
for i in range(100000):
    m.add(f"k{i}", np.full(64, i, np.float32), big, [[i % 10]], [float(i)], Snarc(0, 0, 0, 0, 0), 0.0)
    print(i, flush=True)
"""


def test_survives_kill_mid_write(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    committed = -1
    deadline = time.time() + 30
    while committed < 40 and time.time() < deadline:
        committed = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert committed >= 40
    m = Memory(path)
    assert m.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n = len(m)
    assert n >= committed + 1  # every row reported as committed is there
    ids, emb = m.embeddings()
    for row, i in enumerate(ids):  # and every row present is whole
        e = m.get(int(i))
        k = int(e.key[1:])
        assert e.output == [[k % 10]] and e.energy_trace == [float(k)] and len(e.input["pad"]) == 200_000
        assert np.all(emb[row] > 0) or k == 0
    m.add("after", np.ones(64, np.float32), {}, None, [], Snarc(0, 0, 0, 0, 0), 0.0)  # still writable
    assert len(m) == n + 1
    m.close()
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM experiences").fetchone()[0] == n + 1
