"""The one training loop of the project, for every model (the ARC model, its distilled students, the
robot control policy), read top to bottom:

    batch (a pure function of seed and step) -> the family's loss (task + teacher terms) -> backward
    -> clip -> optimiser steps on a warm-up/stable/decay (or cosine) schedule -> EMA -> logs
    (JSONL, TensorBoard, progress bar) -> atomic checkpoints.

A model *family* supplies what differs: its model, its optimisers, its batches and its loss (see
`Family`). The loop owns everything else: bf16 autocast on CUDA, DDP under `torchrun`, the schedule,
EMA, finiteness checks (every `log_every` steps and before every checkpoint, so no step waits on the
host, and a NaN never reaches a checkpoint), resume (same step count, same sample order; a resume with
other settings is refused unless allowed) and the wall-clock budget.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from ..errors import ConfigError, SageError
from ..utils.io import atomic_save_safetensors, atomic_write_json
from .state import load_optimizer, save_optimizer

log = logging.getLogger(__name__)
# The loop sets the factor before each optimiser step on purpose (the schedule of the step about to run).
warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
PEAK_BF16_FLOPS = 989e12  # H100/H200 SXM dense bf16 datasheet figure, for MFU
# Settings a resume may change: where and how often to log or stop, not what is trained.
FREE_ON_RESUME = {"out", "out_dir", "max_minutes", "log_every", "checkpoint_every", "save_every", "workers", "device"}


@dataclass
class LoopSettings:
    out: Path
    steps: int
    warmup: int = 0
    schedule: Literal["wsd", "cosine"] = "wsd"
    decay_fraction: float = 0.2  # wsd: linear decay to 0 over this last part of the schedule
    minutes: float | None = None  # the schedule runs on the wall clock: train this many minutes (equal-time arms)
    max_minutes: float | None = None  # stop with a checkpoint after this wall time (resume later)
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    log_every: int = 25
    checkpoint_every: int = 500
    snapshots: list[float] = field(default_factory=list)  # also keep the EMA model at these fractions
    seed: int = 0
    compile: bool = False


class Family(Protocol):
    """What a model family gives the loop."""

    model: nn.Module  # the trained model: EMA'd, checkpointed, wrapped in DDP
    extra: nn.Module | None  # trained parts outside the model (e.g. a feature loss's projector); checkpointed

    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...
    def clipped(self) -> list[torch.nn.Parameter]: ...  # parameters whose gradient norm is clipped
    def batches(self, start: int) -> Iterable[dict[str, Any]]: ...  # the batches of steps start, start+1, ...
    def loss(self, net: nn.Module, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict[str, Any]]: ...
    def metrics(self, batch: dict[str, Any], out: dict[str, Any]) -> dict[str, float]: ...
    def work(self, batch: dict[str, Any]) -> dict[str, float]: ...  # per-step counts: tokens, flops
    def save_inference(self, folder: Path, weights: dict[str, torch.Tensor]) -> None: ...
    def settings(self) -> dict[str, Any]: ...  # what a resume must match (JSON)


def schedule_factor(s: LoopSettings, step: int, progress: float) -> float:
    """Learning-rate factor: linear warm-up over `warmup` steps, then by `progress` in [0, 1]
    (steps or wall time): wsd holds 1 and decays linearly to 0 over the last `decay_fraction`;
    cosine decays from 1 to 0."""
    if step < s.warmup:
        return (step + 1) / s.warmup
    progress = min(1.0, max(0.0, progress))
    if s.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    start = 1 - s.decay_fraction
    return 1.0 if progress < start else max(0.0, (1 - progress) / s.decay_fraction)


class Loop:
    def __init__(self, family: Family, s: LoopSettings, resume: bool = False, allow_changes: bool = False) -> None:
        self.family, self.s = family, s
        self.distributed = dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.model = family.model
        self.device = next(self.model.parameters()).device
        self.optimizers = family.optimizers()
        self.factor = 1.0
        # torch's scheduler applies the factor; the loop computes it from steps or the clock.
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda _e: self.factor)
                           for o in self.optimizers.values()]
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(s.ema_decay))
        self.step, self.elapsed = 0, 0.0  # steps done; training minutes spent before this process
        if resume:
            self._load(allow_changes)
        net: nn.Module = self.model
        if self.distributed:
            net = DDP(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.net = net

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, float]:
        s, out = self.s, self.s.out
        writer = None
        if self.rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            self._trim_metrics()
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tensorboard"))
        cuda = self.device.type == "cuda"
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)
        start, last = time.time(), {}
        window_t, window_work, window_steps, sampled = time.time(), {}, 0, 0
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        # A resumed run has written the snapshots of the fractions it passed already.
        snapshots = [f for f in sorted(s.snapshots) if f > self._progress(self.elapsed)]
        bar = tqdm(total=s.steps, initial=self.step, disable=self.rank != 0, dynamic_ncols=True, desc="train")
        for batch in self.family.batches(self.step):
            minutes = self.elapsed + (time.time() - start) / 60
            self.factor = schedule_factor(s, self.step, self._progress(minutes))
            for sch in self.schedulers:
                sch.step()
            with autocast:
                loss, outputs = self.family.loss(self.net, batch, self.step)
            for o in self.optimizers.values():
                o.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.family.clipped(), s.grad_clip)
            # Finiteness without a host sync: remember the first bad step, look at it when logging or saving.
            bad = ~(torch.isfinite(loss.detach()) & torch.isfinite(grad_norm))
            first_bad = torch.where(bad & (first_bad < 0), self.step, first_bad)
            for o in self.optimizers.values():
                o.step()
            self.ema.update_parameters(self.model)
            self.step += 1
            window_steps += 1
            bar.update(1)
            if self.rank == 0 and window_steps <= 2:  # sample the work of two steps a window
                for k, v in self.family.work(batch).items():
                    window_work[k] = window_work.get(k, 0.0) + v * self.world
                sampled += 1
            minutes = self.elapsed + (time.time() - start) / 60
            done = self.step >= s.steps or (s.minutes is not None and minutes >= s.minutes)
            out_of_time = self._agree(s.max_minutes is not None and (time.time() - start) / 60 >= s.max_minutes)
            logging_now = self.step % s.log_every == 0 or done
            saving = self.step % s.checkpoint_every == 0 or done or out_of_time
            if logging_now or saving:
                self._check(first_bad, loss, grad_norm)
            if logging_now:
                elapsed = time.time() - window_t
                last = {"step": self.step, "loss": float(loss.detach()), "grad_norm": float(grad_norm),
                        "lr_factor": self.factor,
                        **{k: float(v) for k, v in outputs.get("parts", {}).items()},
                        **self.family.metrics(batch, outputs),
                        "steps_per_s": window_steps / elapsed, "minutes": minutes}
                for k, v in window_work.items():
                    last[f"{k}_per_s"] = v / max(sampled, 1) * window_steps / elapsed
                if "flops_per_s" in last:
                    last["mfu"] = last.pop("flops_per_s") / (PEAK_BF16_FLOPS * self.world)
                window_t, window_work, window_steps, sampled = time.time(), {}, 0, 0
                if self.rank == 0:
                    bar.set_postfix(loss=f"{last['loss']:.3f}")
                    self._log(last, writer)
            if saving:
                self.save(minutes)
            while snapshots and (self._progress(minutes) >= snapshots[0] or done):
                frac = snapshots.pop(0)
                if self.rank == 0 and not done:
                    self.family.save_inference(out / "snapshots" / f"step-{self.step:06d}", self.ema_weights())
                    log.info("snapshot at %.0f%% of the schedule (step %d)", 100 * frac, self.step)
            if done:
                break
            if out_of_time:
                log.info("stopping at step %d: max_minutes reached; resume to continue", self.step)
                break
        bar.close()
        if writer is not None:
            writer.close()
        return last

    # ------------------------------------------------------------------ helpers
    def _progress(self, minutes: float) -> float:
        """How far through the schedule: by the clock with `minutes`, else by steps done."""
        return minutes / self.s.minutes if self.s.minutes else self.step / self.s.steps

    def _check(self, first_bad: torch.Tensor, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        step = int(first_bad)
        if step >= 0:
            what = "loss" if not torch.isfinite(loss) else "gradient norm"
            value = float(loss.detach()) if what == "loss" else float(grad_norm)
            raise SageError(f"{what} is {value} (first non-finite value at step {step}); the last good checkpoint "
                            f"in {self.s.out / 'train_state'} (step {self._saved_step()}) is intact: resume it "
                            "with a lower learning rate", file=self.s.out)

    def _saved_step(self) -> int | None:
        path = self.s.out / "train_state" / "state.json"
        return json.loads(path.read_text())["step"] if path.is_file() else None

    def _agree(self, flag: bool) -> bool:
        """Rank 0's clock decides for every rank, or the ranks would stop at different steps and hang."""
        if not self.distributed:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.broadcast(t, src=0)
        return bool(t.item())

    def _log(self, row: dict[str, float], writer) -> None:
        with open(self.s.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        for k, v in row.items():
            if k != "step":
                writer.add_scalar(k, v, row["step"])

    def _trim_metrics(self) -> None:
        """A resumed run re-logs the steps after its checkpoint: drop them so no step repeats."""
        path = self.s.out / "metrics.jsonl"
        if path.is_file():
            rows = [line for line in path.read_text().splitlines() if line.strip()]
            kept = [r for r in rows if json.loads(r)["step"] <= self.step]
            path.write_text("".join(r + "\n" for r in kept))

    def ema_weights(self) -> dict[str, torch.Tensor]:
        return self.ema.module.state_dict()

    def save(self, minutes: float) -> None:
        """Rank 0 writes the inference folder (EMA weights) and the resumable state, state.json last."""
        if self.rank != 0:
            return
        self.family.save_inference(self.s.out, self.ema_weights())
        state = self.s.out / "train_state"
        state.mkdir(exist_ok=True)
        parts = {"weights": self.model, "ema": self.ema, "extra": self.family.extra}
        for name, module in parts.items():
            if module is not None:
                atomic_save_safetensors(state / f"{name}.safetensors",
                                        {k: v.detach().cpu() for k, v in module.state_dict().items()})
        for name, opt in self.optimizers.items():
            (state / name).mkdir(exist_ok=True)
            save_optimizer(state / name, opt)
        atomic_write_json(state / "state.json", {"step": self.step, "minutes": minutes,
                                                 "settings": self.family.settings()})

    def _load(self, allow_changes: bool) -> None:
        state = self.s.out / "train_state"
        try:
            meta = json.loads((state / "state.json").read_text())
            step, minutes, saved = int(meta["step"]), float(meta.get("minutes", 0.0)), meta["settings"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"cannot resume: {state / 'state.json'} is unreadable ({e})", file=self.s.out) from None
        mine = json.loads(json.dumps(self.family.settings()))
        differ = sorted(k for k in set(mine) | set(saved) if k not in FREE_ON_RESUME and mine.get(k) != saved.get(k))
        if differ and not allow_changes:
            raise ConfigError(f"resuming a run with other settings ({', '.join(differ)}); use a new output folder, "
                              "or allow the changes explicitly", file=self.s.out)
        dev = str(self.device)
        try:
            self.model.load_state_dict(load_file(state / "weights.safetensors", device=dev))
            self.ema.load_state_dict(load_file(state / "ema.safetensors", device=dev))
            if self.family.extra is not None:
                self.family.extra.load_state_dict(load_file(state / "extra.safetensors", device=dev))
            for name, opt in self.optimizers.items():
                load_optimizer(state / name, opt)
        except (OSError, RuntimeError, ValueError, KeyError) as e:
            msg = " ".join(str(e).split())[:200]
            raise ConfigError(f"cannot resume from {state}: {msg}", file=self.s.out) from None
        self.step, self.elapsed = step, minutes
        log.info("resumed %s at step %d", self.s.out, self.step)


def init_distributed() -> tuple[torch.device, int, int]:
    """(device, rank, world size): a process group when launched by torchrun, the local GPU if any."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        torch.backends.cuda.matmul.allow_tf32 = True
        return torch.device("cuda", local), rank, world
    return torch.device("cpu"), rank, world
