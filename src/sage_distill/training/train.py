"""Training the SAGE ARC model, or distilling a smaller one from a teacher: the ARC family of the one
training loop (`loop.py`). It supplies packed rows (data.py), the SAGE model, one fused AdamW over the
shared weights and the task rows (their own group), and the loss set of the config (`losses:`), with the
frozen teacher of `teacher:` run on the student's own rows (never their labels).

Launch with `sage-distill train --config FILE.yaml`, or data-parallel with
`torchrun --nproc_per_node=K -m sage_distill train --config FILE.yaml`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..distill.losses import LOSSES, LossSet
from ..distill.terms import LossInputs
from ..errors import ConfigError, SageError
from ..student.checkpoint import save_model
from ..student.configuration_sage import IGNORE, VOCAB
from ..student.modeling_sage import SageModel, packed_mask
from ..utils.io import atomic_write_json
from .config import TrainConfig
from .data import PackedRows, StepBatches, assemble
from .loop import Loop, LoopSettings, init_distributed
from .on_policy import on_policy_rows

log = logging.getLogger(__name__)


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


class ArcFamily:
    """The ARC model (or student) for the loop: batches, optimisers, loss, inference folders."""

    def __init__(self, cfg: TrainConfig, device: torch.device, rank: int = 0, world: int = 1,
                 config_file: str | Path | None = None) -> None:
        self.cfg, self.device, self.rank, self.world = cfg, device, rank, world
        torch.manual_seed(cfg.seed)
        d, o = cfg.data, cfg.optim
        self.table, self.decontamination = assemble(d.training, d.evaluation, d.include_eval_demos)
        self.model = SageModel(cfg.model_config_(len(self.table.fingerprints))).to(device)
        self.teacher, self.teacher_rows = build_arc_teacher(cfg, self.table, device, config_file)
        self.losses = build_losses(cfg, self.model, self.teacher, config_file).to(device)
        self.extra: nn.Module | None = self.losses if next(self.losses.parameters(), None) is not None else None
        self.want_hidden = "feature" in self.losses.terms
        shared = [p for n, p in self.model.named_parameters() if not n.startswith("tasks.")]
        shared += list(self.losses.parameters())  # e.g. a feature projector trains with the student
        self._clipped = shared
        tasks = list(self.model.tasks.parameters())
        self._optimizers = {"adamw": torch.optim.AdamW([
            {"params": [p for p in shared if p.ndim >= 2], "weight_decay": o.weight_decay},
            {"params": [p for p in shared if p.ndim < 2], "weight_decay": 0.0},
            {"params": tasks, "weight_decay": 0.0, "lr": o.task_lr},
        ], lr=o.lr, betas=(0.9, 0.95), fused=device.type == "cuda")}
        self.packed = PackedRows(self.table, o.row_len, cfg.seed, self.model.config.palette_views)
        self.on_policy_stats: dict[str, Any] = {}

    def compile(self) -> None:
        """The whole model as one graph (embeddings, blocks, head); the frozen teacher likewise."""
        self.model.compile()
        if hasattr(self.teacher, "model"):
            self.teacher.model.compile()

    # -- what the loop asks for
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._optimizers

    def clipped(self) -> list[nn.Parameter]:
        return self._clipped

    def batches(self, start: int):
        o = self.cfg.optim
        loader = torch.utils.data.DataLoader(
            StepBatches(self.packed, o.rows, self.rank, self.world), batch_size=None,
            sampler=range(start, o.steps), num_workers=self.cfg.workers, pin_memory=self.device.type == "cuda",
            persistent_workers=False, prefetch_factor=4 if self.cfg.workers else None)
        for batch in loader:
            yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def loss(self, net: nn.Module, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict[str, Any]]:
        term, generated = self.losses.on_policy, None
        if term is not None and step % term.every == 0:
            o = self.cfg.optim
            extra, stats = on_policy_rows(self.model, self.packed, o.rows, term.pairs, self.cfg.seed, step,
                                          self.rank, term.sample_temperature, term.max_tokens)
            self.on_policy_stats.update(stats)
            if extra is not None:  # one forward over the data rows and the generated rows together
                generated = torch.cat([torch.full_like(batch["labels"], IGNORE), extra["generated"]])
                batch = {k: torch.cat([batch[k], extra[k]]) for k in batch}
        mask = packed_mask(batch["doc"])
        out = net(batch["tokens"], batch["pos"], batch["task"], batch["view"], batch["role"], mask,
                  return_hidden=self.want_hidden)
        logits, hidden = out if self.want_hidden else (out, None)
        teacher = None
        if self.teacher is not None:
            teacher = self.teacher.targets(batch, self.teacher_rows)
        real = batch["real"] if generated is None else batch["real"] & (generated == IGNORE)
        li = LossInputs(logits, batch["labels"], hidden, real, teacher, generated)
        total, parts = self.losses(li)
        if self.world > 1:  # DDP averages the ranks' gradients: weight each rank by its share of the labelled
            # tokens, so the step is the one a single process would take on the whole global batch
            n = li.labelled().sum().float()
            everyone = n.clone()
            dist.all_reduce(everyone)
            total = total * n * self.world / everyone.clamp(min=1)
        if generated is not None:  # logged at the next log step even if that step generates nothing
            self.on_policy_stats["on_policy_last"] = parts["on_policy"]
        return total, {"parts": parts, "logits": logits, "batch": batch}

    @torch.no_grad()
    def metrics(self, batch: dict[str, Any], out: dict[str, Any]) -> dict[str, float]:
        """Teacher-forced output-token accuracy and whole-output exactness on the data rows."""
        logits, batch = out["logits"], out["batch"]
        labels = batch["labels"]
        labelled = labels != IGNORE
        wrong = (logits.argmax(-1) != labels) & labelled
        doc = batch["doc"] + torch.arange(labels.shape[0], device=labels.device)[:, None] * labels.shape[1]
        docs_with_labels, docs_wrong = torch.unique(doc[labelled]), torch.unique(doc[wrong])
        row = {"token_acc": float(1 - wrong.sum() / labelled.sum().clamp(min=1)),
               "exact": 1 - len(docs_wrong) / max(1, len(docs_with_labels)),
               "lr": self._optimizers["adamw"].param_groups[0]["lr"]}
        return {**row, **{k: float(v) for k, v in self.on_policy_stats.items()}}

    def work(self, batch: dict[str, Any]) -> dict[str, float]:
        return {"tokens": float(batch["real"].sum()), "flops": batch_flops(self.model, batch)}

    def save_inference(self, folder: Path, weights: dict[str, torch.Tensor]) -> None:
        save_model(folder, self.model, self.table.fingerprints, state_dict=weights)

    def settings(self) -> dict[str, Any]:
        return self.cfg.model_dump(mode="json")

    def run_info(self) -> dict[str, Any]:
        t = self.teacher
        return {"config": self.cfg.model_dump(mode="json"), "world_size": self.world,
                "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
                "pairs": len(self.table), "tasks": len(self.table.fingerprints),
                "decontamination": self.decontamination.dropped,
                "parameters": {"shared": self.model.shared_parameters(),
                               "task_embeddings": sum(p.numel() for p in self.model.tasks.parameters()),
                               "teacher_shared": t.model.shared_parameters() if hasattr(t, "model") else None}}


def build_arc_teacher(cfg: TrainConfig, table, device: torch.device, config_file: str | Path | None):
    """The frozen teacher of `teacher:` (or None), and the map from student task rows to its rows: a SAGE
    model folder (logits and hidden states on the student's own rows) or a feature store (features of each
    pair's input grid). hf and groot teachers are extracted to a store first (`sage-distill extract`)."""
    spec = cfg.teacher
    if spec is None:
        return None, None
    if spec.kind not in ("sage", "store"):
        hint = ("run `sage-distill extract --teacher " + spec.kind + "` to a store and use kind: store"
                if spec.kind in ("hf", "groot") else "policy teachers are for the robot trainer")
        raise ConfigError(f"the ARC trainer reads sage and store teachers; {hint}", file=config_file,
                          where="teacher.kind")
    try:
        if spec.kind == "store":
            from ..distill.store_teacher import StoreTeacher

            return StoreTeacher(spec.path, table.inputs, device), None
        from ..distill.sage_teacher import SageTeacher

        teacher = SageTeacher(spec.path, device)
    except SageError as e:
        raise ConfigError(f"cannot use the teacher {spec.path}: {e.one_line()}", file=config_file,
                          where="teacher.path") from None
    return teacher, teacher.task_rows(table.fingerprints)


def build_losses(cfg: TrainConfig, model: SageModel, teacher, config_file: str | Path | None) -> LossSet:
    """The loss set, checked against the teacher before any step: each teacher term needs a teacher that
    gives its signal, logits over the same vocabulary, features of a size the projector can take."""
    needs = {k for x in cfg.losses for k in getattr(LOSSES[x.name], "needs_teacher", ())}
    if needs and teacher is None:
        raise ConfigError(f"the losses need a teacher's {', '.join(sorted(needs))}: add a teacher: section",
                          file=config_file, where="teacher")
    if teacher is not None and not needs:
        raise ConfigError("a teacher is configured but no loss reads it (add logit, feature or on_policy to losses)",
                          file=config_file, where="teacher")
    if teacher is not None and needs - teacher.signals:
        raise ConfigError(f"the {teacher.name} teacher gives {', '.join(sorted(teacher.signals))} only; the losses "
                          f"need its {', '.join(sorted(needs - teacher.signals))}", file=config_file, where="losses")
    context: dict[str, Any] = {"student_hidden": model.config.hidden}
    if teacher is not None:
        context["teacher_dim"] = teacher.feature_dim
        if hasattr(teacher, "mean"):  # a store's own statistics standardise its features
            context.update(teacher_mean=teacher.mean, teacher_std=teacher.std)
    try:
        losses = LossSet(cfg.loss_spec(), **context)
    except SageError as e:
        raise ConfigError(e.problem, file=config_file, where=e.where or "losses") from None
    if "logits" in needs and getattr(teacher, "vocab", None) != VOCAB:
        raise ConfigError(f"the teacher's vocabulary has {teacher.vocab} tokens, the student's {VOCAB}: logit "
                          "losses need the same tokens", file=config_file, where="teacher.path")
    return losses


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


def loop_settings(cfg: TrainConfig) -> LoopSettings:
    o = cfg.optim
    return LoopSettings(out=Path(cfg.out_dir), steps=o.steps, warmup=o.warmup, schedule=o.schedule,
                        decay_fraction=o.decay_fraction, minutes=o.minutes, max_minutes=cfg.max_minutes,
                        grad_clip=o.grad_clip, ema_decay=o.ema_decay, log_every=cfg.log_every,
                        checkpoint_every=cfg.checkpoint_every, snapshots=list(cfg.snapshots), seed=cfg.seed)


def build(cfg: TrainConfig, resume: bool = False, allow_changes: bool = False,
          config_file: str | Path | None = None) -> tuple[ArcFamily, Loop]:
    device, rank, world = init_distributed()
    family = ArcFamily(cfg, device, rank, world, config_file)
    loop = Loop(family, loop_settings(cfg), resume=resume, allow_changes=allow_changes)
    if cfg.compile:
        family.compile()
    return family, loop


def train(cfg: TrainConfig, resume: str | Path | None = None, allow_changes: bool = False,
          config_file: str | Path | None = None) -> dict[str, float]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not torch.cuda.is_available():
        need, have = cpu_memory_needed(cfg), available_memory()
        if need > 0.8 * have:
            raise SageError(f"optim: training on the CPU needs about {need / 2**30:.1f} GiB ({cfg.optim.rows} rows of "
                            f"{cfg.optim.row_len} tokens, preset {cfg.preset}); {have / 2**30:.1f} GiB is available. "
                            "Lower optim.rows / optim.row_len (--set optim.rows=1 --set optim.row_len=2048) "
                            "or use a GPU")
    if resume is not None:
        if not (Path(resume) / "train_state" / "state.json").is_file():
            raise SageError(f"--resume {resume}: no checkpoint there (missing train_state/state.json)")
        if Path(resume).resolve() != Path(cfg.out_dir).resolve():
            cfg = cfg.model_copy(update={"out_dir": str(resume)})
    elif (Path(cfg.out_dir) / "train_state").exists():
        raise SageError(f"{cfg.out_dir}: holds a run already; pass --resume {cfg.out_dir} or choose another out_dir")
    family, loop = build(cfg, resume is not None, allow_changes, config_file)
    if family.rank == 0:
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(cfg.out_dir) / "run.json", family.run_info(), indent=1)
    return loop.fit()
