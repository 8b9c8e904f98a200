"""The training loop, top to bottom: packed rows -> SAGE model -> AdamW (shared weights) + sparse
Adam (task rows) on a warm-up-stable-decay schedule -> bf16 autocast, compiled, flex attention ->
loss on output tokens -> clip -> EMA -> logs -> atomic checkpoints.

Launch with `sage-distill train --config FILE.yaml`, or data-parallel with
`torchrun --nproc_per_node=K -m sage_distill train --config FILE.yaml`. The batch of every
(step, rank) is a pure function of the seed, so a killed run resumed from its last checkpoint
continues the same schedule on the same data.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from ..distill.losses import output_loss
from ..errors import SageError
from ..student.checkpoint import save_model
from ..student.modeling_sage import SageModel, packed_mask
from ..utils.io import atomic_save_safetensors, atomic_write_json
from .config import TrainConfig
from .data import IGNORE, PackedRows, StepBatches, assemble
from .state import load_optimizer, save_optimizer

log = logging.getLogger(__name__)
PEAK_BF16_FLOPS = 989e12  # H100/H200 SXM dense bf16 datasheet figure, for MFU


def wsd_factor(step: int, cfg: TrainConfig) -> float:
    """Warm-up, stable, then linear decay to zero over the last `decay_fraction` of the steps."""
    o = cfg.optim
    if step < o.warmup:
        return (step + 1) / o.warmup
    decay_start = int(o.steps * (1 - o.decay_fraction))
    if step < decay_start:
        return 1.0
    return max(0.0, (o.steps - step) / max(1, o.steps - decay_start))


def batch_flops(model: SageModel, batch: dict[str, torch.Tensor]) -> float:
    """Forward + backward FLOPs of the non-pad tokens: 6 x matmul params x tokens + causal attention."""
    c = model.config
    matmul = sum(p.numel() for n, p in model.named_parameters() if p.ndim == 2 and n.startswith("blocks."))
    matmul += model.head.weight.numel()
    doc, real = batch["doc"], batch["real"]
    tokens = float(real.sum())
    sq = sum(float((torch.bincount(d[r]).float() ** 2).sum()) for d, r in zip(doc, real, strict=True))
    attn = 3 * 2 * 2 * c.hidden * c.layers * c.loops * sq / 2  # QK and AV, causal half, x3 for backward
    return 6 * matmul * c.loops * tokens + attn


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
        self.table, self.decontamination = assemble(d.training, d.evaluation, d.include_eval_demos)
        self.model = SageModel(cfg.model_config_(len(self.table.fingerprints))).to(self.device)
        shared = [p for n, p in self.model.named_parameters() if not n.startswith("tasks.")]
        o = cfg.optim
        self.optimizer = torch.optim.AdamW([
            {"params": [p for p in shared if p.ndim >= 2], "weight_decay": o.weight_decay},
            {"params": [p for p in shared if p.ndim < 2], "weight_decay": 0.0},
        ], lr=o.lr, betas=(0.9, 0.95), fused=self.device.type == "cuda")
        self.task_optimizer = torch.optim.SparseAdam(list(self.model.tasks.parameters()), lr=o.task_lr,
                                                     betas=(0.9, 0.95))
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(o.ema_decay))
        self.step = 0
        if resume:
            self._load(Path(resume))
        if cfg.compile:  # the blocks only: the sparse task-embedding lookup stays eager
            for block in self.model.blocks:
                block.compile()
        net = self.model
        if self.distributed:
            net = DDP(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.net = net
        self.packed = PackedRows(self.table, o.row_len, cfg.seed)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, float]:
        cfg, o = self.cfg, self.cfg.optim
        writer = self._writer()
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            self._write_run_info()
            self._trim_metrics()
        loader = torch.utils.data.DataLoader(
            StepBatches(self.packed, o.rows, self.rank, self.world), batch_size=None,
            sampler=range(self.step, o.steps), num_workers=cfg.workers, pin_memory=self.device.type == "cuda",
            persistent_workers=False, prefetch_factor=4 if cfg.workers else None)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" \
            else torch.autocast("cpu", enabled=False)
        snapshot_steps = {max(1, int(f * o.steps)) for f in cfg.snapshots}
        start_time, last = time.time(), {}
        window_t, window_flops, window_tokens = time.time(), 0.0, 0.0
        bar = tqdm(total=o.steps, initial=self.step, disable=self.rank != 0, dynamic_ncols=True, desc="train")
        for batch in loader:
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            factor = wsd_factor(self.step, cfg)
            for g in self.optimizer.param_groups:
                g["lr"] = o.lr * factor
            for g in self.task_optimizer.param_groups:
                g["lr"] = o.task_lr * factor
            with autocast:
                logits = self.net(batch["tokens"], batch["pos"], batch["task"], batch["view"], batch["role"],
                                  packed_mask(batch["doc"]))
            loss = output_loss(logits, batch["labels"])
            if not torch.isfinite(loss):
                raise self._diverged("loss", loss)
            self.optimizer.zero_grad(set_to_none=True)
            self.task_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            shared = [p for n, p in self.model.named_parameters() if not n.startswith("tasks.")]
            grad_norm = torch.nn.utils.clip_grad_norm_(shared, o.grad_clip)
            if not torch.isfinite(grad_norm):  # stop before a bad update reaches the weights or a checkpoint
                raise self._diverged("gradient norm", grad_norm)
            self.optimizer.step()
            self.task_optimizer.step()
            self.ema.update_parameters(self.model)
            self.step += 1
            bar.update(1)
            if self.rank == 0 and self.step % cfg.log_every in (0, 1):
                window_flops += batch_flops(self.model, batch) * self.world
                window_tokens += float(batch["real"].sum()) * self.world
            if self.step % cfg.log_every == 0 or self.step == o.steps:
                last = self._metrics(loss, grad_norm, logits, batch)
                elapsed = time.time() - window_t
                # FLOPs and tokens were sampled on 2 steps of each window: scale to the window.
                steps_in_window = cfg.log_every if self.step % cfg.log_every == 0 else self.step % cfg.log_every
                sampled = 2 if steps_in_window > 1 else 1
                last["tokens_per_s"] = window_tokens / sampled * steps_in_window / elapsed
                last["mfu"] = window_flops / sampled * steps_in_window / elapsed / (PEAK_BF16_FLOPS * self.world)
                last["steps_per_s"] = steps_in_window / elapsed
                last["minutes"] = (time.time() - start_time) / 60
                window_t, window_flops, window_tokens = time.time(), 0.0, 0.0
                if self.rank == 0:
                    bar.set_postfix(loss=f"{last['loss']:.3f}", exact=f"{last['exact']:.3f}",
                                    tok_s=f"{last['tokens_per_s']:.0f}", mfu=f"{last['mfu']:.2f}")
                    self._log(last, writer)
            out_of_time = self._agree(cfg.max_minutes is not None and (time.time() - start_time) / 60 > cfg.max_minutes)
            if self.step % cfg.checkpoint_every == 0 or self.step == o.steps or out_of_time:
                self.save()
            if self.step in snapshot_steps and self.rank == 0:
                self.save_inference(self.out / "snapshots" / f"step-{self.step:06d}")
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
    def _diverged(self, what: str, value: torch.Tensor) -> SageError:
        return SageError(f"{self.out}: {what} is {float(value.detach())} at step {self.step}; the last good "
                         f"checkpoint in {self.out / 'train_state'} is intact (resume with a lower optim.lr)")

    @torch.no_grad()
    def _metrics(self, loss, grad_norm, logits, batch) -> dict[str, float]:
        labels = batch["labels"]
        labelled = labels != IGNORE
        wrong = (logits.argmax(-1) != labels) & labelled
        doc = batch["doc"] + torch.arange(labels.shape[0], device=labels.device)[:, None] * labels.shape[1]
        docs_with_labels = torch.unique(doc[labelled])
        docs_wrong = torch.unique(doc[wrong])
        return {"step": self.step, "loss": float(loss), "grad_norm": float(grad_norm),
                "lr": self.optimizer.param_groups[0]["lr"],
                "token_acc": float(1 - wrong.sum() / labelled.sum()),
                "exact": 1 - len(docs_wrong) / max(1, len(docs_with_labels))}

    def _agree(self, flag: bool) -> bool:
        """Rank 0's clock decides for every rank, or the ranks would stop at different steps and hang."""
        if not self.distributed:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.broadcast(t, src=0)
        return bool(t.item())

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

    def _trim_metrics(self) -> None:
        """A resumed run re-logs the steps after its checkpoint: drop them so no step repeats."""
        path = self.out / "metrics.jsonl"
        if path.is_file():
            rows = [line for line in path.read_text().splitlines() if line.strip()]
            kept = [r for r in rows if json.loads(r)["step"] <= self.step]
            path.write_text("".join(r + "\n" for r in kept))

    def _write_run_info(self) -> None:
        atomic_write_json(self.out / "run.json", {
            "config": self.cfg.model_dump(), "world_size": self.world,
            "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            "pairs": len(self.table), "tasks": len(self.table.fingerprints),
            "decontamination": self.decontamination.dropped,
            "parameters": {"shared": self.model.shared_parameters(),
                           "task_embeddings": sum(p.numel() for p in self.model.tasks.parameters())},
        }, indent=1)

    def save_inference(self, folder: Path) -> None:
        ema = self.ema.module.state_dict()
        save_model(folder, self.model, self.table.fingerprints, state_dict=ema)

    def save(self) -> None:
        """Rank 0 writes the inference folder (EMA weights) and the resumable state."""
        if self.rank != 0:
            return
        self.save_inference(self.out)
        state = self.out / "train_state"
        state.mkdir(exist_ok=True)
        atomic_save_safetensors(state / "weights.safetensors",
                                {k: v.detach().cpu() for k, v in self.model.state_dict().items()})
        atomic_save_safetensors(state / "ema.safetensors",
                                {k: v.detach().cpu() for k, v in self.ema.state_dict().items()})
        for name, opt in (("shared", self.optimizer), ("tasks", self.task_optimizer)):
            (state / name).mkdir(exist_ok=True)
            save_optimizer(state / name, opt)
        # state.json last: its presence with this step marks a complete checkpoint.
        atomic_write_json(state / "state.json", {"step": self.step, "seed": self.cfg.seed})

    def _load(self, folder: Path) -> None:
        state = folder / "train_state"
        if not (state / "state.json").is_file():
            raise SageError(f"{folder}: nothing to resume (no {state / 'state.json'})")
        meta = json.loads((state / "state.json").read_text())
        dev = str(self.device)
        self.model.load_state_dict(load_file(state / "weights.safetensors", device=dev))
        self.ema.load_state_dict(load_file(state / "ema.safetensors", device=dev))
        load_optimizer(state / "shared", self.optimizer)
        load_optimizer(state / "tasks", self.task_optimizer)
        self.step = meta["step"]
        log.info("resumed from %s at step %d", folder, self.step)


def cpu_memory_needed(cfg: TrainConfig) -> float:
    """Rough bytes one CPU training step needs: weights, gradients and Adam moments, activations kept for
    backward, and the dense per-row attention scores and mask the CPU path materialises per layer."""
    m, o = cfg.model_config_(), cfg.optim
    model = SageModel(m.model_copy(update={"num_tasks": 1}))
    tokens = o.rows * o.row_len
    weights = 16 * model.shared_parameters()
    activations = 4 * tokens * m.layers * m.loops * (12 * m.hidden + 3 * m.mlp_hidden)
    attention = (4 * m.heads + 1) * o.rows * o.row_len ** 2 * 2  # scores + mask, the forward's and backward's
    return float(weights + activations + attention)


def available_memory() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return float(line.split()[1]) * 1024
    return float("inf")


def train(cfg: TrainConfig, resume: str | Path | None = None) -> dict[str, float]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not torch.cuda.is_available():
        need, have = cpu_memory_needed(cfg), available_memory()
        if need > 0.8 * have:
            raise SageError(f"optim: training on the CPU needs about {need / 2**30:.1f} GiB ({cfg.optim.rows} rows of "
                            f"{cfg.optim.row_len} tokens, preset {cfg.preset}); {have / 2**30:.1f} GiB is available. "
                            "Lower optim.rows / optim.row_len (--set optim.rows=1 --set optim.row_len=2048) "
                            "or use a GPU")
    if resume is not None and not (Path(resume) / "train_state" / "state.json").is_file():
        raise SageError(f"--resume {resume}: no checkpoint there (missing train_state/state.json)")
    if resume is None and (Path(cfg.out_dir) / "train_state").exists():
        raise SageError(f"{cfg.out_dir}: holds a run already; pass --resume {cfg.out_dir} or choose another out_dir")
    return Trainer(cfg, resume).fit()

