"""Where an ARC training step's time goes, in three separate measurements (one GPU lease, ~3 minutes):

1. the data loader alone (the config's workers): batches per second;
2. the training step alone on one batch reused (forward, loss, backward, clip, optimiser, EMA), timed with
   CUDA synchronisation: steps per second, against the loop's logged rate;
3. a torch.profiler table of that step (top kernels and CPU ops), written to OUT/profile.txt.

Usage: python scripts/profile_train.py --config configs/arc-large.yaml --out DIR [--steps 40] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from sage_distill.training.config import load_config
from sage_distill.training.train import build
from sage_distill.utils.config import parse_overrides


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--set", action="append", default=[])
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(a.config, parse_overrides(a.set + [f"out_dir={out / 'run'}"]))
    family, loop = build(cfg)
    cuda = family.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    report: dict[str, float] = {}

    batches = family.batches(0)
    next(batches)  # workers started
    t = time.time()
    for _ in range(a.steps):
        batch = next(batches)
    report["loader_batches_per_s"] = a.steps / (time.time() - t)

    opts = list(family.optimizers().values())

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss, _ = family.loss(loop.net, batch, 1)
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(family.clipped(), 1.0)
        for o in opts:
            o.step()
        loop.ema.update_parameters(family.model)

    t = time.time()
    for _ in range(3):  # compile and warm-up
        step()
    sync()
    report["first_steps_s"] = time.time() - t
    t = time.time()
    for _ in range(a.steps):
        step()
    sync()
    report["step_alone_per_s"] = a.steps / (time.time() - t)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(5):
            step()
        sync()
    sort = "cuda_time_total" if cuda else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=40)
    (out / "profile.txt").write_text(table)
    (out / "profile.json").write_text(json.dumps(report, indent=1))
    print(table[:6000])
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
