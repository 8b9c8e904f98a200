"""Model-agnostic distillation losses: values, the T^2 convention, masking, the trainable projector,
the config recipe, and a tiny SAGE student that learns from a tiny SAGE teacher on a packed batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sage_distill.arc import load_dataset
from sage_distill.arc.task import fingerprint
from sage_distill.distill.losses import LOSSES, LossSet
from sage_distill.distill.terms import FeatureLoss, LogitLoss, LossInputs, OnPolicyLoss, TaskLoss
from sage_distill.errors import SageError
from sage_distill.student import SageModel
from sage_distill.student.configuration_sage import IGNORE
from sage_distill.student.modeling_sage import document_mask
from sage_distill.training.data import PackedRows, StepBatches, build_pairs

B, L, V = 2, 12, 14


pytestmark = pytest.mark.usefixtures("one_thread")


def labels(b: int = B, n: int = L) -> torch.Tensor:
    """Labels on the second half of each row only (as for output tokens), IGNORE elsewhere."""
    out = torch.randint(0, V, (b, n), generator=torch.Generator().manual_seed(3))
    out[:, : n // 2] = IGNORE
    return out


def kl_rows(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """[B, L] KL(softmax(teacher / t) || softmax(student / t)), computed independently of the loss."""
    p = F.softmax(teacher / t, -1)
    return (p * (p.log() - F.log_softmax(student / t, -1))).sum(-1)


def test_registry_holds_the_model_agnostic_terms_only() -> None:
    assert set(LOSSES) == {"task", "logit", "feature", "on_policy"}


def test_on_policy_divergences_on_generated_tokens_only() -> None:
    torch.manual_seed(0)
    student, teacher, gen = torch.randn(B, L, V), torch.randn(B, L, V), labels()
    keep = gen != IGNORE
    li = LossInputs(student, torch.full_like(gen, IGNORE), teacher={"logits": teacher}, generated=gen)
    reverse = OnPolicyLoss("reverse")(li)
    assert torch.allclose(reverse, kl_rows(teacher, student, 1.0)[keep].mean(), rtol=1e-5)  # KL(student||teacher)
    forward_kl = OnPolicyLoss("forward")(li)
    assert torch.allclose(forward_kl, kl_rows(student, teacher, 1.0)[keep].mean(), rtol=1e-5)
    # GKD's generalised JSD: between 0 and the mixture's bound, symmetric at beta = 0.5
    jsd = OnPolicyLoss("jsd", beta=0.5)(li)
    swapped = OnPolicyLoss("jsd", beta=0.5)(LossInputs(teacher, li.labels, teacher={"logits": student}, generated=gen))
    assert 0 < jsd < torch.log(torch.tensor(2.0)) and torch.allclose(jsd, swapped, rtol=1e-5)
    assert OnPolicyLoss()(LossInputs(teacher.clone(), li.labels, teacher={"logits": teacher}, generated=gen)) < 1e-6
    # no generated rows this step: zero, but still part of the graph
    zero = OnPolicyLoss()(LossInputs(student.requires_grad_(), gen, teacher={"logits": teacher}))
    assert zero.item() == 0.0 and zero.requires_grad
    with pytest.raises(SageError, match="divergence"):
        OnPolicyLoss("kl")


def test_task_loss_is_cross_entropy_on_labelled_tokens() -> None:
    torch.manual_seed(0)
    logits, y = torch.randn(B, L, V), labels()
    value = TaskLoss()(LossInputs(logits, y))
    keep = y != IGNORE
    assert torch.allclose(value, F.cross_entropy(logits[keep], y[keep]), rtol=1e-6)
    other = logits.clone()
    other[~keep] = 100 * torch.randn(int((~keep).sum()), V)  # unlabelled tokens carry no loss
    assert torch.allclose(TaskLoss()(LossInputs(other, y)), value)


def test_logit_loss_is_t_squared_scaled_kl_on_labelled_tokens() -> None:
    torch.manual_seed(0)
    student, teacher, y = torch.randn(B, L, V), torch.randn(B, L, V), labels()
    keep = y != IGNORE
    for t in (1.0, 2.0, 4.0):
        value = LogitLoss(temperature=t)(LossInputs(student, y, teacher={"logits": teacher}))
        assert torch.allclose(value, kl_rows(student, teacher, t)[keep].mean() * t * t, rtol=1e-5)
    # The T^2 factor keeps the loss finite as T grows: T^2 KL -> half the variance of (teacher - student).
    big = LogitLoss(temperature=200.0)(LossInputs(student, y, teacher={"logits": teacher}))
    limit = 0.5 * (teacher - student).var(-1, unbiased=False)[keep].mean()
    assert torch.allclose(big, limit, rtol=2e-2)
    assert LogitLoss()(LossInputs(teacher.clone(), y, teacher={"logits": teacher})).abs() < 1e-6


def test_logit_loss_masks_rows_and_tokens() -> None:
    torch.manual_seed(1)
    student, teacher, y = torch.randn(B, L, V), torch.randn(B, L, V), labels()
    kl = kl_rows(student, teacher, 1.0)
    loss = LogitLoss(temperature=1.0)
    rows = loss(LossInputs(student, y, teacher={"logits": teacher, "mask": torch.tensor([False, True])}))
    assert torch.allclose(rows, kl[1, L // 2:].mean(), rtol=1e-5)
    tokens = torch.zeros(B, L, dtype=torch.bool)
    tokens[0, -2:] = True
    tokens[1, :3] = True  # unlabelled tokens stay out even where the teacher has logits
    value = loss(LossInputs(student, y, teacher={"logits": teacher, "mask": tokens}))
    assert torch.allclose(value, kl[0, -2:].mean(), rtol=1e-5)


def test_logit_loss_errors_are_clear() -> None:
    y = labels()
    with pytest.raises(SageError, match="needs teacher 'logits'"):
        LogitLoss()(LossInputs(torch.randn(B, L, V), y, teacher={"features": torch.randn(B, L, 8)}))
    with pytest.raises(SageError, match="do not match"):
        LogitLoss()(LossInputs(torch.randn(B, L, V), y, teacher={"logits": torch.randn(B, L, 11)}))
    with pytest.raises(SageError, match="temperature"):
        LogitLoss(temperature=0)


def test_feature_loss_is_order_one_at_init_on_large_features() -> None:
    torch.manual_seed(0)
    d_t = 256
    scale = torch.rand(d_t) * 500  # activations with a few huge dimensions, as LLM hidden states have
    teacher = torch.randn(4, L, d_t) * scale + 1000
    li = LossInputs(torch.randn(4, L, V), labels(4), hidden=torch.randn(4, L, 32), teacher={"features": teacher})
    loss = FeatureLoss(student_hidden=32, teacher_dim=d_t, mse=1.0, cosine=0.5)
    assert 0.5 < loss(li).item() < 3.0  # ~1 (MSE of standardised targets) + ~0.5 (cosine)
    raw = (loss.proj(li.hidden) - teacher).pow(2).sum(-1).mean()
    assert raw > 1e6  # what an unnormalised, summed MSE would have been


def test_feature_projector_is_trainable_and_learns_the_map() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(4, L, 16)
    teacher = hidden @ torch.randn(16, 24) * 30 + 5  # a linear image of the student's states
    li = LossInputs(torch.randn(4, L, V), labels(4), hidden=hidden, teacher={"features": teacher})
    loss = FeatureLoss(student_hidden=16, teacher_dim=24, mse=1.0, cosine=0.5)
    assert [p for p in loss.parameters()] == [loss.proj.weight, loss.proj.bias]
    opt = torch.optim.Adam(loss.parameters(), lr=5e-2)
    first = loss(li)
    first.backward()
    assert loss.proj.weight.grad.abs().sum() > 0
    for _ in range(60):
        opt.zero_grad()
        value = loss(li)
        value.backward()
        opt.step()
    assert value.item() < 0.05 * first.item()


def test_feature_loss_uses_given_statistics_and_skips_padding() -> None:
    mean, std = torch.full((8,), 5.0), torch.full((8,), 2.0)
    loss = FeatureLoss(student_hidden=32, teacher_dim=8, mse=1.0, cosine=0.0, teacher_mean=mean, teacher_std=std)
    with torch.no_grad():
        loss.proj.weight.zero_()
        loss.proj.bias.zero_()
    teacher = torch.full((B, L, 8), 9.0)  # standardised: (9 - 5) / 2 = 2 everywhere
    teacher[:, -3:] = 1000.0  # padding tokens: never read
    real = torch.ones(B, L, dtype=torch.bool)
    real[:, -3:] = False
    li = LossInputs(torch.randn(B, L, V), labels(), hidden=torch.randn(B, L, 32), real=real,
                    teacher={"features": teacher})
    assert torch.allclose(loss(li), torch.tensor(4.0))
    assert torch.equal(loss.mean, mean)  # given statistics are never updated


def test_feature_loss_one_vector_per_row_matches_the_rows_mean_state() -> None:
    torch.manual_seed(0)
    hidden, teacher = torch.randn(B, L, 16), torch.randn(B, 1, 8)
    y = labels()
    loss = FeatureLoss(student_hidden=16, teacher_dim=8, mse=1.0, cosine=0.0, tokens="labelled",
                       teacher_mean=torch.zeros(8), teacher_std=torch.ones(8))
    value = loss(LossInputs(torch.randn(B, L, V), y, hidden=hidden, teacher={"features": teacher}))
    pooled = hidden[:, L // 2:].mean(1, keepdim=True)  # the labelled half
    assert torch.allclose(value, (loss.proj(pooled) - teacher).pow(2).mean(), rtol=1e-5)
    with pytest.raises(SageError, match="do not line up"):
        loss(LossInputs(torch.randn(B, L, V), y, hidden=hidden, teacher={"features": torch.randn(B, 4, 8)}))
    with pytest.raises(SageError, match="fits neither rows nor tokens"):
        loss(LossInputs(torch.randn(B, L, V), y, hidden=hidden,
                        teacher={"features": teacher, "mask": torch.ones(B, L, dtype=torch.bool)}))
    with pytest.raises(SageError, match="hidden states"):
        loss(LossInputs(torch.randn(B, L, V), y, teacher={"features": teacher}))


def test_loss_set_is_the_weighted_sum_and_logs_each_term() -> None:
    torch.manual_seed(0)
    spec = [{"name": "task", "weight": 1}, {"name": "logit", "weight": 0.3, "temperature": 2.0},
            {"name": "feature", "weight": 0.5, "mse": 1.0, "cosine": 0.5}]
    losses = LossSet(spec, student_hidden=32, teacher_dim=16)
    li = LossInputs(torch.randn(B, L, V), labels(), hidden=torch.randn(B, L, 32),
                    teacher={"logits": torch.randn(B, L, V), "features": torch.randn(B, L, 16)})
    total, parts = losses(li)
    assert set(parts) == {"task", "logit", "feature"}
    assert torch.allclose(parts["task"], TaskLoss()(li))
    assert torch.allclose(parts["logit"], LogitLoss(2.0)(li))
    assert torch.allclose(total, parts["task"] + 0.3 * parts["logit"] + 0.5 * parts["feature"], rtol=1e-6)
    assert sum(p.numel() for p in losses.parameters()) == 32 * 16 + 16  # the projector trains with the student


def test_loss_set_errors_are_clear() -> None:
    with pytest.raises(SageError, match="unknown loss 'halt'"):
        LossSet([{"name": "halt"}])
    with pytest.raises(SageError, match="student_hidden and teacher_dim"):
        LossSet([{"name": "feature"}])
    with pytest.raises(SageError, match="bad options for loss 'logit'"):
        LossSet([{"name": "logit", "temprature": 2}])
    with pytest.raises(SageError, match="twice"):
        LossSet([{"name": "task"}, {"name": "task"}])


def packed_batch(n_tasks: int = 3, rows: int = 2, row_len: int = 384) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A real packed training batch of a few small tasks' demonstration pairs, and their fingerprints."""
    small = [t for t in load_dataset("arc1", "training")
             if max(g.size for p in t.train for g in (p.input, p.output)) <= 36][:n_tasks]
    table = build_pairs([(t.without_answers(), False) for t in small])
    batch = StepBatches(PackedRows(table, row_len, seed=0), rows, rank=0, world=1)[0]
    return batch, [fingerprint(t) for t in small]


def forward(model: SageModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and final hidden states (the head's input) of a student on a packed batch."""
    return model(batch["tokens"], batch["pos"], batch["task"], batch["view"], batch["role"],
                 document_mask(batch["doc"]), return_hidden=True)
