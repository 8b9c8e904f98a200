"""The one training loop under DDP (two gloo processes on the CPU, as `torchrun --nproc_per_node=2` would
start them): the same weights as one process on the same global batch, and a killed run resumed under DDP
gives the unbroken run's weights."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))


def config(out: Path, rows: int, **extra):
    from sage_distill.training.config import TrainConfig

    return TrainConfig(**{"out_dir": str(out), "preset": "tiny", "seed": 0,
                          "data": {"training": [("w", "training")], "evaluation": [("w", "evaluation")]},
                          "optim": {"steps": 4, "rows": rows, "row_len": 128, "warmup": 1, "lr": 3e-3},
                          "log_every": 2, "checkpoint_every": 100, "snapshots": [], **extra})


def run(rank: int, world: int, port: int, out: Path, resume: bool, extra: dict) -> None:
    """One process: rank `rank` of `world` (world 1: no process group), the synthetic world's data."""
    from arc_world import small_world
    from sage_distill.training.train import build

    if world > 1:
        os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        small_world(patch)
        _, loop = build(config(out, rows=2 // world, **extra), resume=resume)
        loop.fit()
    if world > 1:
        torch.distributed.destroy_process_group()


def ddp(out: Path, resume: bool = False, **extra) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(run, args=(2, port, out, resume, extra), nprocs=2)


def weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(out / "train_state" / "weights.safetensors")


@pytest.mark.timeout(600)
def test_ddp_matches_one_process_and_resumes(tmp_path: Path) -> None:
    ddp(tmp_path / "ddp")
    run(0, 1, 0, tmp_path / "single", False, {})
    a, b = weights(tmp_path / "ddp"), weights(tmp_path / "single")
    # Adam's first steps are nearly sign(grad): float-order noise moves a weight by at most ~lr. Without the
    # per-rank weighting by labelled tokens the gap was 0.04 here; with it, under 2e-3.
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 2e-3
    ddp(tmp_path / "killed", max_minutes=1e-9)  # stops with a checkpoint after the first step
    ddp(tmp_path / "killed", resume=True)
    c = weights(tmp_path / "killed")
    assert all(torch.allclose(a[k], c[k], atol=1e-6) for k in a)
