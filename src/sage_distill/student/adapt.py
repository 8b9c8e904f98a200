"""Test-time adaptation: fit a task's codes (one per augmentation variant) to its demonstration pairs.

Used by `sage-distill predict` for tasks the model has never seen, and by the IRP runtime's ARC
solver and its DREAM consolidation (which may also unfreeze the model). Test outputs are never read:
the task is stripped of them first.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..arc.task import Task
from ..distill.losses import LossInputs, TaskLoss
from ..training.data import to_canvas, variant_augmentations
from .modeling_sage import SageModel


def demo_batch(task: Task, variants: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Every demonstration pair under every variant augmentation, at the canvas's top-left."""
    ins, outs, sizes, index = [], [], [], []
    for v, aug in enumerate(variant_augmentations(task, variants)):
        for p in task.train:
            i, o = aug.apply(p.input), aug.apply(p.output)
            ins.append(to_canvas(i))
            outs.append(to_canvas(o))
            sizes.append(o.shape)
            index.append(v)
    return {"inputs": torch.from_numpy(np.stack(ins)).long().to(device),
            "outputs": torch.from_numpy(np.stack(outs)).long().to(device),
            "out_size": torch.tensor(sizes, dtype=torch.long, device=device),
            "variant": torch.tensor(index, dtype=torch.long, device=device)}


def demo_loss(model: SageModel, batch: dict[str, torch.Tensor], codes: torch.Tensor, steps: int) -> torch.Tensor:
    readouts = model(batch["inputs"], codes[batch["variant"]], steps=steps, detach_between_steps=True)
    return TaskLoss()(LossInputs(readouts, batch))


def fit_codes(model: SageModel, task: Task, init: torch.Tensor, steps: int, lr: float,
              model_lr: float = 0.0, deadline: Callable[[], bool] | None = None) -> tuple[torch.Tensor, list[float]]:
    """Fit codes [V, code_dim] (and, with model_lr > 0, the model) to the task's demonstrations.
    Returns the codes and the loss curve. `deadline()` returning True stops early (ATP spent)."""
    task = task.without_answers()
    device = next(model.parameters()).device
    batch = demo_batch(task, init.shape[0], device)
    codes = init.detach().clone().to(device).requires_grad_(True)
    params: list[dict] = [{"params": [codes], "lr": lr}]
    if model_lr > 0:
        params.append({"params": list(model.parameters()), "lr": model_lr})
    opt = torch.optim.Adam(params)
    was_training = model.training
    model.train(model_lr > 0)
    frozen = [p for p in model.parameters() if p.requires_grad] if model_lr <= 0 else []
    for p in frozen:  # no gradients for weights nobody updates: about half the backward pass
        p.requires_grad_(False)
    curve = []
    fit_depth = max(1, model.config.max_steps // 2)  # shallower than inference: fitting is the costly part
    try:
        with torch.enable_grad():
            for _ in range(steps):
                if deadline is not None and deadline():
                    break
                loss = demo_loss(model, batch, codes, fit_depth)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                curve.append(loss.item())
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    return codes.detach(), curve
