"""The training loop, top to bottom: data -> model + task codes -> AdamW (warmup, cosine) ->
bf16 autocast -> deep-supervised losses -> clip -> EMA -> logs -> atomic checkpoints.

Launch with `sage-distill train --config FILE.yaml`, or data-parallel with
`torchrun --nproc_per_node=K -m sage_distill train --config FILE.yaml`. The batch of every
(step, rank) is a pure function of the seed, so a killed run resumed from its last checkpoint
continues the same schedule and the same data order.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from ..distill.losses import LossInputs, LossSet, step_correct
from ..student.checkpoint import TaskCodes, save_model
from ..student.modeling_sage import SageModel, SageReadout
from ..utils.io import atomic_save_safetensors, atomic_write_json
from .config import TrainConfig
from .data import ExampleTable, assemble, sample_batch
from .state import load_optimizer, save_optimizer

log = logging.getLogger(__name__)
PEAK_BF16_FLOPS = 989e12  # H100/H200 SXM dense bf16 datasheet figure, for MFU


class Student(nn.Module):
    """The shared model plus the task-code table: everything the optimiser updates."""

    def __init__(self, model: SageModel, num_codes: int) -> None:
        super().__init__()
        self.model = model
        self.codes = nn.Embedding(num_codes, model.config.code_dim)
        nn.init.normal_(self.codes.weight, std=0.02)

    def forward(self, inputs: torch.Tensor, code_index: torch.Tensor, steps: int) -> list[SageReadout]:
        return self.model(inputs, self.codes(code_index), steps, detach_between_steps=True)


def flops_per_example(model: SageModel, steps: int) -> float:
    """Matmul FLOPs of forward + backward (3x forward) for one example."""
    c = model.config
    tokens, d = c.canvas * c.canvas + c.task_tokens, c.hidden
    hidden = int(d * c.mlp_ratio)
    per_layer = 2 * tokens * (4 * d * d + 3 * d * hidden) + 4 * tokens * tokens * d
    return 3.0 * steps * c.layers_per_step * per_layer


def lr_factor(step: int, cfg: TrainConfig) -> float:
    o = cfg.optim
    if step < o.warmup:
        return (step + 1) / o.warmup
    progress = min(1.0, (step - o.warmup) / max(1, o.steps - o.warmup))
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(student: Student, losses: LossSet, cfg: TrainConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for p in [*student.model.parameters(), *losses.parameters()]:
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "lr": cfg.optim.lr, "weight_decay": cfg.optim.weight_decay, "base_lr": cfg.optim.lr},
        {"params": no_decay, "lr": cfg.optim.lr, "weight_decay": 0.0, "base_lr": cfg.optim.lr},
        {"params": list(student.codes.parameters()), "lr": cfg.optim.code_lr, "weight_decay": 0.0,
         "base_lr": cfg.optim.code_lr},
    ]
    return torch.optim.AdamW(groups, betas=(0.9, 0.95), fused=torch.cuda.is_available())


def batch_metrics(readout: SageReadout, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    targets = batch["outputs"]
    pred = readout.logits.argmax(-1)
    inside, fg = targets < 10, (targets > 0) & (targets < 10)
    return {"cell_acc": ((pred == targets) & inside).sum() / inside.sum(),
            "fg_acc": ((pred == targets) & fg).sum() / fg.sum().clamp(min=1),
            "exact": step_correct(readout, batch).float().mean()}


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: str | Path | None = None) -> None:
        self.cfg = cfg
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if self.distributed:
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            self.device = torch.device("cuda", local)
            torch.backends.cuda.matmul.allow_tf32 = True
        else:
            self.device = torch.device("cpu")
        self.out = Path(cfg.out_dir)
        torch.manual_seed(cfg.seed)

        d = cfg.data
        self.table: ExampleTable
        self.table, self.decontamination = assemble(d.training, d.evaluation, d.include_eval_demos, d.variants,
                                                    d.keep_background)
        self.model_cfg = cfg.model_config_()
        self.student = Student(SageModel(self.model_cfg), len(self.table.fingerprints) * d.variants).to(self.device)
        self.teacher, context = None, {}
        if cfg.teacher:
            from .teacher_source import make_teacher_source

            self.teacher, context = make_teacher_source(cfg.teacher, self.table, self.device)
        self.losses = LossSet(cfg.losses, student_hidden=self.model_cfg.hidden, **context).to(self.device)
        self.optimizer = build_optimizer(self.student, self.losses, cfg)
        self.ema = {k: v.detach().clone().float() for k, v in self.student.state_dict().items()}
        self.step = 0
        if resume:
            self._load(Path(resume))
        self.net = DDP(self.student, device_ids=[self.device.index] if self.device.type == "cuda" else None) \
            if self.distributed else self.student
        if cfg.compile:
            self.net = torch.compile(self.net)
        self.train_steps = cfg.optim.train_steps or self.model_cfg.max_steps
        self.flops = flops_per_example(self.student.model, self.train_steps)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, float]:
        cfg, o = self.cfg, self.cfg.optim
        if o.batch_size % self.world:
            raise ValueError(f"batch_size {o.batch_size} is not divisible by {self.world} ranks")
        per_rank = o.batch_size // self.world
        writer = self._writer()
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            self._write_run_info()
            log.info("parameters: %d shared + %d task-code (%d tasks x %d variants)",
                     self.student.model.num_parameters(), self.student.codes.weight.numel(),
                     len(self.table.fingerprints), self.table.variants)
        start_time, last = time.time(), {}
        bar = tqdm(total=o.steps, initial=self.step, disable=self.rank != 0, dynamic_ncols=True)
        window_t, window_n = time.time(), 0
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" \
            else torch.autocast("cpu", enabled=False)
        while self.step < o.steps:
            for g in self.optimizer.param_groups:
                g["lr"] = g["base_lr"] * lr_factor(self.step, cfg)
            batch = sample_batch(self.table, self.step, self.rank, per_rank, cfg.seed, cfg.data.translate,
                                 self.device)
            with autocast:
                readouts = self.net(batch["inputs"], batch["code_index"], self.train_steps)
                teacher = self.teacher(batch) if self.teacher else None
                loss, parts = self.losses(LossInputs(readouts, batch, teacher))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(
                [*self.student.parameters(), *self.losses.parameters()], o.grad_clip)
            self.optimizer.step()
            self._update_ema()
            self.step += 1
            window_n += per_rank * self.world
            bar.update(1)

            if self.step % cfg.log_every == 0 or self.step == o.steps:
                elapsed = time.time() - window_t
                last = {"step": self.step, "loss": float(loss.detach()), "grad_norm": float(grad_norm),
                        "lr": self.optimizer.param_groups[0]["lr"],
                        **{f"loss/{k}": float(v) for k, v in parts.items()},
                        **{k: float(v) for k, v in batch_metrics(readouts[-1], batch).items()},
                        "examples_per_s": window_n / elapsed}
                last["mfu"] = last["examples_per_s"] * self.flops / (PEAK_BF16_FLOPS * self.world)
                window_t, window_n = time.time(), 0
                if self.rank == 0:
                    bar.set_postfix(loss=f"{last['loss']:.3f}", fg=f"{last['fg_acc']:.3f}",
                                    exact=f"{last['exact']:.3f}", ex_s=f"{last['examples_per_s']:.0f}")
                    self._log(last, writer)
            out_of_time = self._agree(cfg.max_minutes is not None and (time.time() - start_time) / 60 > cfg.max_minutes)
            if self.step % cfg.checkpoint_every == 0 or self.step == o.steps or out_of_time:
                self.save()
            if out_of_time:
                log.info("stopping at step %d: max_minutes reached; resume with --resume %s", self.step, self.out)
                break
        bar.close()
        if writer is not None:
            writer.close()
        if self.distributed:
            dist.destroy_process_group()
        return last

    # ------------------------------------------------------------------ helpers
    def _agree(self, flag: bool) -> bool:
        """Rank 0's clock decides for every rank, or the ranks would stop at different steps and hang."""
        if not self.distributed:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.broadcast(t, src=0)
        return bool(t.item())

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.cfg.optim.ema_decay, (1 + self.step) / (10 + self.step))
        for k, v in self.student.state_dict().items():
            if v.dtype.is_floating_point:
                self.ema[k].lerp_(v.float(), 1 - decay)

    def _writer(self):
        if self.rank != 0:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.out / "tensorboard"))

    def _log(self, row: dict[str, float], writer) -> None:
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        for k, v in row.items():
            if k != "step":
                writer.add_scalar(k, v, row["step"])

    def _write_run_info(self) -> None:
        atomic_write_json(self.out / "run.json", {
            "config": self.cfg.model_dump(), "world_size": self.world,
            "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            "examples": len(self.table), "tasks": len(self.table.fingerprints),
            "decontamination": self.decontamination.dropped,
            "parameters": {"shared": self.student.model.num_parameters(),
                           "task_codes": self.student.codes.weight.numel()},
        }, indent=1)

    def save(self) -> None:
        """Rank 0 writes the inference folder (EMA weights + codes) and the resumable state."""
        if self.rank != 0:
            return
        model_sd = {k[len("model."):]: v for k, v in self.ema.items() if k.startswith("model.")}
        codes = TaskCodes(self.ema["codes.weight"].cpu(), self.table.fingerprints, self.table.variants)
        save_model(self.out, self.student.model, codes, state_dict=model_sd, dtype=torch.bfloat16)
        state = self.out / "train_state"
        state.mkdir(exist_ok=True)
        atomic_save_safetensors(state / "weights.safetensors",
                                {k: v.detach().cpu() for k, v in self.student.state_dict().items()})
        atomic_save_safetensors(state / "ema.safetensors", {k: v.cpu() for k, v in self.ema.items()})
        atomic_save_safetensors(state / "losses.safetensors",
                                {k: v.detach().cpu() for k, v in self.losses.state_dict().items()})
        save_optimizer(state, self.optimizer)
        # state.json last: its presence with this step marks a complete checkpoint.
        atomic_write_json(state / "state.json", {"step": self.step, "seed": self.cfg.seed,
                                                 "torch_rng": torch.get_rng_state().tolist()})

    def _load(self, folder: Path) -> None:
        state = folder / "train_state"
        meta = json.loads((state / "state.json").read_text())
        self.student.load_state_dict(load_file(state / "weights.safetensors", device=str(self.device)))
        self.losses.load_state_dict(load_file(state / "losses.safetensors", device=str(self.device)))
        self.ema = {k: v.float() for k, v in load_file(state / "ema.safetensors", device=str(self.device)).items()}
        load_optimizer(state, self.optimizer)
        torch.set_rng_state(torch.tensor(meta["torch_rng"], dtype=torch.uint8))
        self.step = meta["step"]
        log.info("resumed from %s at step %d", folder, self.step)


def train(cfg: TrainConfig, resume: str | Path | None = None) -> dict[str, float]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return Trainer(cfg, resume).fit()
