"""Teacher-matching loss terms: values, scaling, masking, config recipe, and a training run that learns."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sage_distill.arc import load_dataset
from sage_distill.distill.losses import LOSSES, LossInputs, LossSet
from sage_distill.distill.teacher_losses import FeatureLoss, LogitLoss, SimilarityLoss, student_tokens
from sage_distill.errors import SageError
from sage_distill.student import SageConfig, SageModel
from sage_distill.student.checkpoint import save_model
from sage_distill.student.modeling_sage import SageReadout
from sage_distill.teachers import build_teacher, teacher_targets
from sage_distill.training.data import build_examples

CFG = SageConfig(hidden=32, heads=2, layers_per_step=1, max_steps=2, task_tokens=2, code_dim=8)


def readout(logits: torch.Tensor | None = None, state: torch.Tensor | None = None, b: int = 2) -> SageReadout:
    logits = torch.randn(b, 30, 30, 11) if logits is None else logits
    state = torch.randn(b, 2 + 900, 32) if state is None else state
    return SageReadout(logits, torch.zeros(b, 30), torch.zeros(b, 30), torch.zeros(b), state)


def test_registered_names() -> None:
    assert {"task", "halt", "logit", "feature", "attention"} <= set(LOSSES)


def test_logit_loss_is_t_squared_scaled_kl() -> None:
    teacher, student = torch.randn(2, 30, 30, 11), torch.randn(2, 30, 30, 11)
    for t in (1.0, 4.0):
        value = LogitLoss(temperature=t)(LossInputs([readout(student)], {}, {"logits": teacher}))
        kl = F.kl_div(F.log_softmax(student / t, -1), F.softmax(teacher / t, -1), reduction="none").sum(-1)
        assert torch.allclose(value, kl.mean() * t * t, rtol=1e-5)
    same = LogitLoss()(LossInputs([readout(teacher)], {}, {"logits": teacher}))
    assert same.abs() < 1e-6


def test_logit_loss_weights_grid_cells_and_masks_rows() -> None:
    teacher, student = torch.randn(2, 30, 30, 11), torch.randn(2, 30, 30, 11)
    outputs = torch.full((2, 30, 30), 10)
    outputs[:, :3, :3] = 1
    loss = LogitLoss(temperature=1.0, outside_weight=0.0)
    inside_only = loss(LossInputs([readout(student)], {"outputs": outputs}, {"logits": teacher}))
    kl = F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True, reduction="none").sum(-1)
    assert torch.allclose(inside_only, kl[:, :3, :3].mean(), rtol=1e-5)
    mask = torch.tensor([True, False])
    masked = loss(LossInputs([readout(student)], {"outputs": outputs}, {"logits": teacher, "mask": mask}))
    assert torch.allclose(masked, kl[0, :3, :3].mean(), rtol=1e-5)


def test_feature_loss_is_order_one_at_init_on_large_features() -> None:
    torch.manual_seed(0)
    d_t = 512
    scale = torch.rand(d_t) * 500  # teacher activations with a few huge dimensions, as LLM hidden states have
    teacher = torch.randn(4, 16, d_t) * scale + 1000
    li = LossInputs([readout(b=4)], {}, {"features": teacher})
    loss = FeatureLoss(student_hidden=32, teacher_dim=d_t, mse=1.0, cosine=0.5)
    value = loss(li)
    assert 0.5 < value.item() < 3.0  # ~1 (MSE of standardised targets) + ~0.5 (cosine)
    raw = (loss.proj(student_tokens(li.readouts[0].state, 16)) - teacher).pow(2).sum(-1).mean()
    assert raw > 1e6  # what an unnormalised, summed MSE would have been
    assert any(p is loss.proj.weight for p in loss.parameters())


def test_feature_loss_uses_store_statistics() -> None:
    mean, std = torch.full((8,), 5.0), torch.full((8,), 2.0)
    loss = FeatureLoss(student_hidden=32, teacher_dim=8, mse=1.0, cosine=0.0, teacher_mean=mean, teacher_std=std)
    with torch.no_grad():
        loss.proj.weight.zero_()
        loss.proj.bias.zero_()
    teacher = torch.full((2, 1, 8), 9.0)  # standardised: (9 - 5) / 2 = 2 everywhere
    assert torch.allclose(loss(LossInputs([readout()], {}, {"features": teacher})), torch.tensor(4.0))
    assert torch.equal(loss.mean, mean)  # fixed statistics are never updated


def test_similarity_loss() -> None:
    state = torch.randn(2, 902, 32)
    teacher = student_tokens(state, 9) @ torch.linalg.qr(torch.randn(32, 32))[0]  # rotated: same similarities
    same = SimilarityLoss()(LossInputs([readout(state=state)], {}, {"features": teacher}))
    other = SimilarityLoss()(LossInputs([readout(state=state)], {}, {"features": torch.randn(2, 9, 64)}))
    assert same < 1e-6 < other
    pooled = SimilarityLoss(grid=2)(LossInputs([readout(state=state)], {}, {"features": torch.randn(2, 16, 8)}))
    assert pooled > 0
    with pytest.raises(SageError, match="spatial teacher features"):
        SimilarityLoss()(LossInputs([readout()], {}, {"features": torch.randn(2, 1, 8)}))


def test_seed_recipe_as_config_list() -> None:
    spec = [{"name": "task", "weight": 1}, {"name": "feature", "weight": 0.5, "mse": 1.0, "cosine": 0.5}]
    losses = LossSet(spec, student_hidden=32, teacher_dim=16)
    batch = {"outputs": torch.randint(0, 10, (2, 30, 30)), "out_size": torch.tensor([[30, 30], [30, 30]])}
    li = LossInputs([readout()], batch, {"features": torch.randn(2, 4, 16)})
    total, parts = losses(li)
    term = losses.terms["feature"]
    target = (li.teacher["features"] - term.mean) / term.std
    pred = term.proj(student_tokens(li.readouts[0].state, 4))
    mse, cos = (pred - target).pow(2).mean(), 1 - F.cosine_similarity(pred, target, dim=-1).mean()
    assert torch.allclose(parts["feature"], mse + 0.5 * cos, rtol=1e-5)
    assert torch.allclose(total, parts["task"] + 0.5 * (mse + 0.5 * cos), rtol=1e-5)


def test_missing_teacher_output_is_a_clear_error() -> None:
    with pytest.raises(SageError, match="needs teacher 'logits'"):
        LogitLoss()(LossInputs([readout()], {}, {"features": torch.randn(2, 1, 8)}))
    with pytest.raises(SageError, match="student_hidden and teacher_dim"):
        LossSet([{"name": "feature"}])


def test_student_learns_from_tiny_sage_teacher(tmp_path: Path) -> None:
    torch.manual_seed(0)
    table = build_examples([(t, True) for t in load_dataset("arc1", "training")[:2]], variants=1)
    idx = torch.arange(4)
    batch = {"inputs": torch.from_numpy(table.inputs[idx]).long(),
             "outputs": torch.from_numpy(table.outputs[idx]).long(), "out_size": torch.from_numpy(table.out_size[idx])}
    # A briefly trained teacher, so its logits are confident (a random one is near-uniform).
    big = SageModel(CFG)
    task_loss, opt = LossSet([{"name": "task"}]), torch.optim.AdamW(big.parameters(), lr=1e-2)
    for _ in range(8):
        loss, _ = task_loss(LossInputs(big(batch["inputs"], torch.zeros(len(idx), 8), 2), batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_model(tmp_path, big)
    teacher = build_teacher({"kind": "sage", "weights": str(tmp_path)})
    target = teacher_targets(teacher, batch, pool="3x3")
    student = SageModel(SageConfig(hidden=16, heads=2, layers_per_step=1, max_steps=2, task_tokens=2, code_dim=8))
    codes = torch.nn.Parameter(torch.zeros(len(idx), 8))
    losses = LossSet([{"name": "task"}, {"name": "logit", "weight": 0.5, "temperature": 2.0},
                      {"name": "feature", "weight": 0.5, "mse": 1.0, "cosine": 0.5}],
                     student_hidden=16, teacher_dim=teacher.feature_dim)
    opt = torch.optim.AdamW([*student.parameters(), codes, *losses.parameters()], lr=3e-3)
    history = []
    for _ in range(20):
        total, parts = losses(LossInputs(student(batch["inputs"], codes, 2), batch, target))
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append({"total": total.item(), **{k: v.item() for k, v in parts.items()}})
    first, last = history[0], history[-1]
    assert last["total"] < 0.75 * first["total"]
    assert last["logit"] < first["logit"] and last["feature"] < first["feature"]
    assert first["feature"] < 5  # normalised: cannot swamp the task loss
