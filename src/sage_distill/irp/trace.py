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
    if path.is_dir():
        raise SageError("is a directory; give the trace.jsonl file", file=path)
    if not path.is_file():
        raise SageError("trace file not found", file=path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SageError(f"cannot read as text: {e}", file=path) from None
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except (json.JSONDecodeError, RecursionError):
            if i == len(lines):
                break  # a torn last line from a killed run: ignore it, keep the rest
            raise SageError("not valid JSON", file=path, where=f"line {i}") from None
    return records
