"""Where a `predict` run's decoding time goes: seconds in prefill, in the steps and in dropping finished rows
(`keep`), for either runtime, on the first N tasks of a challenges file at 8 views; and how far the drafted
tokens carry a step: `kept_per_row_step`, the tokens a sequence keeps per step on average (1 without drafts).

    python scripts/time_decode_parts.py --model G --runtime onnx --challenges C --tasks 4 [--batch 16] [--drafts 3]

G: a model folder (torch) or a folder from `sage-distill export` (onnx). Timers wrap the runtime's
`prefill`/`step`/`keep`; the rest of `total_s` is the decoding loop, voting and writing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from sage_distill.evaluation.predict import PredictConfig, predict_file
from sage_distill.student.generate import DRAFTS, TorchSteps
from sage_distill.student.onnx_runtime import OnnxSteps

TIMES = {"prefill_s": 0.0, "steps_s": 0.0, "keep_s": 0.0, "prefills": 0, "steps": 0, "step_rows": 0, "kept": 0}


def timed(cls: type, name: str, key: str, count: str | None = None, rows: str | None = None) -> None:
    """Wrap `cls.name`: its seconds into TIMES[key], its calls into TIMES[count], its batch rows into TIMES[rows]."""
    inner = getattr(cls, name)

    def wrapper(self, *args, **kwargs):
        t = time.perf_counter()
        out = inner(self, *args, **kwargs)
        TIMES[key] += time.perf_counter() - t
        if count:
            TIMES[count] += 1
        if rows:
            TIMES[rows] += args[0].shape[0]
        return out

    setattr(cls, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--runtime", choices=["torch", "onnx"], default="torch")
    ap.add_argument("--challenges", required=True)
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--drafts", type=int, default=DRAFTS)
    a = ap.parse_args()
    for cls in (TorchSteps, OnnxSteps):
        timed(cls, "prefill", "prefill_s", "prefills")
        timed(cls, "step", "steps_s", "steps", "step_rows")
        timed(cls, "keep", "keep_s")
        commit = cls.commit

        def counted(self, counts, commit=commit):
            TIMES["kept"] += int(counts.sum())
            commit(self, counts)

        cls.commit = counted
    with tempfile.TemporaryDirectory() as tmp:
        first = dict(list(json.loads(Path(a.challenges).read_text()).items())[:a.tasks])
        challenges = Path(tmp) / "challenges.json"
        challenges.write_text(json.dumps(first))
        t = time.perf_counter()
        predict_file(Path(a.model), challenges, Path(tmp) / "p.json", PredictConfig(views=8, runtime=a.runtime,
                                                                                   batch=a.batch, drafts=a.drafts))
        total = time.perf_counter() - t
    TIMES["kept_per_row_step"] = TIMES["kept"] / max(1, TIMES["step_rows"])
    print(json.dumps({"runtime": a.runtime, "tasks": a.tasks, "total_s": round(total, 1),
                      **{k: round(v, 1) if isinstance(v, float) else v for k, v in TIMES.items()}}))


if __name__ == "__main__":
    main()
