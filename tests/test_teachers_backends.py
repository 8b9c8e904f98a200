"""The local Hugging Face teacher, the online SAGE teacher, and building either from config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import SiglipVisionConfig, SiglipVisionModel, ViTConfig, ViTModel

from sage_distill.arc import load_dataset
from sage_distill.distill.sage_teacher import SageTeacher
from sage_distill.errors import SageError
from sage_distill.student import SageConfig, SageModel
from sage_distill.student.checkpoint import load_model, save_model
from sage_distill.student.modeling_sage import document_mask
from sage_distill.teachers import build_teacher, render_canvases, teacher_targets
from sage_distill.teachers.base import to_canvas
from sage_distill.teachers.hf import HFTeacher
from sage_distill.training.data import PackedRows, StepBatches, build_pairs

TINY_SAGE = SageConfig(hidden=32, heads=2, layers=2, mlp_hidden=64, num_tasks=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def canvases(n: int = 2) -> torch.Tensor:
    return torch.randint(0, 11, (n, 30, 30), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[SiglipVisionModel, Path]:
    torch.manual_seed(0)
    model = SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                 num_attention_heads=2, image_size=28, patch_size=14))
    folder = tmp_path_factory.mktemp("siglip")
    model.save_pretrained(folder)
    return model.eval(), folder


@pytest.mark.parametrize("layer", [-1, 1])
def test_hf_teacher_reads_the_chosen_layer(siglip_dir: tuple[SiglipVisionModel, Path], layer: int) -> None:
    model, folder = siglip_dir
    teacher = HFTeacher(folder, layer=layer)
    q = canvases()
    feats = teacher.encode(q)["features"]
    with torch.no_grad():
        want = model(pixel_values=render_canvases(q, 28), output_hidden_states=True).hidden_states[layer]
    assert feats.shape == (2, 4, 32) and teacher.tokens_hw == (2, 2)
    assert torch.allclose(feats, want, atol=1e-6)


def test_hf_teacher_drops_cls_token(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                               image_size=28, patch_size=14), add_pooling_layer=False).eval()
    model.save_pretrained(tmp_path)
    teacher = build_teacher({"kind": "hf", "weights": str(tmp_path), "layer": 1})
    q = canvases()
    feats = teacher.encode(q)["features"]
    with torch.no_grad():
        tokens = model(pixel_values=render_canvases(q, 28), output_hidden_states=True).hidden_states[1]
    assert tokens.shape == (2, 5, 16) and feats.shape == (2, 4, 16)  # 5 tokens minus CLS
    assert torch.allclose(feats, tokens[:, 1:], atol=1e-6)  # the dropped token is the first one, CLS
    assert not torch.allclose(feats, tokens[:, :4], atol=1e-3)


def test_hf_teacher_refuses_bad_folder_and_layer(siglip_dir: tuple[SiglipVisionModel, Path], tmp_path: Path) -> None:
    with pytest.raises(SageError, match="no config.json"):
        HFTeacher(tmp_path)
    with pytest.raises(SageError, match="layer must be"):
        HFTeacher(siglip_dir[1], layer=7)


@pytest.fixture(scope="module")
def sage_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[SageModel, Path]:
    torch.manual_seed(0)
    model = SageModel(TINY_SAGE).eval()
    folder = tmp_path_factory.mktemp("sage")
    save_model(folder, model, ["fpA", "fpB"])
    return load_model(folder)[0], folder  # as stored (bf16 weights)


def packed_batch() -> dict[str, torch.Tensor]:
    """A real packed batch of two small tasks' demonstration pairs (student task rows 0 and 1)."""
    small = [t for t in load_dataset("arc1", "training")
             if max(g.size for p in t.train for g in (p.input, p.output)) <= 36][:2]
    table = build_pairs([(t.without_answers(), False) for t in small])
    return StepBatches(PackedRows(table, 256, seed=0), 2, rank=0, world=1)[0]


def test_sage_teacher_gives_per_token_logits_and_hidden_states(sage_dir: tuple[SageModel, Path]) -> None:
    model, folder = sage_dir
    teacher = SageTeacher(folder)
    batch = packed_batch()
    rows = teacher.task_rows(["fpB", "fpA"])  # the student's rows in another order: matched by fingerprint
    assert rows.tolist() == [1, 0]
    reads = {k: v for k, v in batch.items() if k != "labels"}  # the teacher never needs the labels
    out = teacher.targets(reads, rows)
    b, n = batch["tokens"].shape
    assert out["logits"].shape == (b, n, 14) and out["features"].shape == (b, n, 32)
    assert teacher.feature_dim == 32 and out["logits"].dtype == out["features"].dtype == torch.float32
    with torch.no_grad():
        want = model(batch["tokens"], batch["pos"], rows[batch["task"]], batch["view"], batch["role"],
                     document_mask(batch["doc"]))
        assert torch.allclose(out["logits"], want, atol=1e-5)
        assert torch.allclose(model.head(out["features"]), want, atol=1e-5)  # the head's input
    # Documents do not see each other: changing a row's first document leaves its second one as it was.
    first, second = batch["doc"][0] == 0, batch["doc"][0] == 1
    assert first.any() and second.any()
    tokens = reads["tokens"].clone()
    tokens[0, first] = (tokens[0, first] + 1) % 10
    moved = teacher.targets({**reads, "tokens": tokens}, rows)["logits"][0]
    assert torch.allclose(moved[second], out["logits"][0][second], atol=1e-5)
    assert not torch.allclose(moved[first], out["logits"][0][first], atol=1e-3)
    assert not out["logits"].requires_grad and not any(p.requires_grad for p in teacher.model.parameters())


def test_sage_teacher_gives_unseen_tasks_its_mean_embedding(sage_dir: tuple[SageModel, Path]) -> None:
    model, folder = sage_dir
    teacher = SageTeacher(folder)
    rows = teacher.task_rows(["fpA", "never seen"])
    assert rows.tolist() == [0, 2]
    tasks = teacher.model.tasks
    assert torch.allclose(tasks.task.weight[2], model.tasks.task.weight.mean(0))
    assert torch.allclose(tasks.colour.weight[20:30], model.tasks.colour.weight.view(2, 10, -1).mean(0))
    assert torch.equal(tasks.task.weight[:2], model.tasks.task.weight)
    with pytest.raises(SageError, match="needs packed batch keys doc"):
        teacher.targets({k: v for k, v in packed_batch().items() if k != "doc"}, rows)


def test_sage_teacher_in_bfloat16(sage_dir: tuple[SageModel, Path]) -> None:
    _, folder = sage_dir
    batch = packed_batch()
    full = SageTeacher(folder)
    half = SageTeacher(folder, dtype=torch.bfloat16)
    a = full.targets(batch, full.task_rows(["fpA", "fpB"]))["logits"]
    b = half.targets(batch, half.task_rows(["fpA", "fpB"]))["logits"]
    assert b.dtype == torch.float32 and (a - b).abs().max() < 0.1


def test_grid_teacher_targets(siglip_dir: tuple[SiglipVisionModel, Path]) -> None:
    teacher = build_teacher({"kind": "hf", "weights": str(siglip_dir[1])})
    grids = [np.array([[1, 2], [3, 4]]), np.full((5, 3), 7)]
    grid = teacher_targets(teacher, grids, pool="grid")
    spatial = teacher_targets(teacher, grids, pool="none")
    assert grid["features"].shape == (2, 1, 32) and spatial["features"].shape == (2, 4, 32)
    assert torch.allclose(grid["features"][:, 0], spatial["features"].mean(1), atol=1e-5)
    canvases = torch.from_numpy(np.stack([to_canvas(g) for g in grids]))
    assert torch.equal(teacher_targets(teacher, canvases, pool="grid")["features"], grid["features"])


def test_config_errors_are_clear(sage_dir: tuple[SageModel, Path], tmp_path: Path) -> None:
    with pytest.raises(SageError, match="needs --tokenizer"):
        build_teacher({"kind": "groot", "weights": str(tmp_path)})
    with pytest.raises(SageError, match="KxK"):
        build_teacher({"kind": "hf", "weights": str(tmp_path), "pool": "big"})
    with pytest.raises(SageError, match="kind"):
        build_teacher({"kind": "sage", "weights": str(sage_dir[1])})  # the SAGE teacher is distillation's
    with pytest.raises(SageError, match="not a SAGE model folder"):
        SageTeacher(tmp_path)
    with pytest.raises(SageError, match="does not read grids"):
        teacher_targets(SageTeacher(sage_dir[1]), [np.zeros((2, 2))])
