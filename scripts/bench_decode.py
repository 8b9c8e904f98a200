"""Decoding throughput: greedy generation of one batch of augmented views on a random-weight model
of a preset (the cost per step does not depend on the weights), with a profiler table.

    python scripts/bench_decode.py --preset large --batch 512 --device cuda
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from sage_distill.student import SageConfig, SageModel
from sage_distill.student.generate import Job, generate, view_augmentations


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="large")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--size", type=int, default=12, help="input grid side")
    ap.add_argument("--new", type=int, default=200, help="tokens generated per sequence")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    model = SageModel(SageConfig.preset(a.preset).model_copy(update={"num_tasks": 4})).to(a.device).eval()
    if a.device == "cuda":
        model = model.to(torch.bfloat16)
    with torch.no_grad():  # never emit <end>, so every sequence runs the full length
        model.head.weight[13].fill_(0)
    rng = np.random.default_rng(0)
    grid = rng.integers(0, 10, (a.size, a.size)).astype(np.uint8)
    jobs = [Job(grid, aug, i % 4) for i, aug in enumerate(view_augmentations("0" * 16, a.batch))]
    generate(model, jobs[:8], max_new=8)  # warm-up
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    generate(model, jobs, max_new=a.new)
    sync()
    seconds = time.perf_counter() - t
    print(json.dumps({"preset": a.preset, "batch": a.batch, "prompt_tokens": a.size * (a.size + 1) + 2,
                      "new_tokens": a.new, "seconds": round(seconds, 3), "ms_per_step": round(1e3 * seconds / a.new, 3),
                      "sequences_per_s": round(a.batch / seconds, 1)}))
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if a.device == "cuda" else [])
        with profile(activities=acts) as prof:
            generate(model, jobs, max_new=50)
            sync()
        key = "cuda_time_total" if a.device == "cuda" else "cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=14))


if __name__ == "__main__":
    main()
