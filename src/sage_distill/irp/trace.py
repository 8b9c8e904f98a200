"""The explainability trace: one JSON object per orchestrator cycle, appended to a JSONL file.

Each record holds the cycle number, metabolic state before/after and why, the cycle budget, ATP
allocated/spent/returned per plugin, steps and energy curves, halt reasons, trust before and after,
the answer's plugin and the reason it was chosen, and the SNARC salience of the experience."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from ..errors import SageError


class TraceWriter:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"))
        with self._lock:  # one whole line per write, flushed, so a crash loses at most the last cycle
            self._f.write(line + "\n")
            self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_trace(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise SageError(f"{path}: trace file not found")
    records = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(path.read_text(encoding="utf-8").splitlines()):
                break  # a torn last line from a killed run: ignore it, keep the rest
            raise SageError(f"{path}, line {i}: not valid JSON") from None
    return records
