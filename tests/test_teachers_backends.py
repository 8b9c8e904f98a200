"""The local Hugging Face teacher, the SAGE teacher, and building either from config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import SiglipVisionConfig, SiglipVisionModel, ViTConfig, ViTModel

from sage_distill.errors import SageError
from sage_distill.student import SageConfig, SageModel
from sage_distill.student.checkpoint import TaskCodes, save_model
from sage_distill.teachers import TeacherConfig, build_teacher, render_canvases, teacher_targets
from sage_distill.teachers.hf import HFTeacher

TINY_SAGE = SageConfig(hidden=32, heads=2, layers_per_step=1, max_steps=2, task_tokens=2, code_dim=8)


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
    ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       image_size=28, patch_size=14), add_pooling_layer=False).save_pretrained(tmp_path)
    teacher = build_teacher({"kind": "hf", "weights": str(tmp_path), "layer": 0})
    assert teacher.encode(canvases())["features"].shape == (2, 4, 16)  # 5 tokens minus CLS


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
    codes = TaskCodes(torch.randn(4, 8), ["fpA", "fpB"], variants=2)
    save_model(folder, model, codes)
    return model, folder


def test_sage_teacher_features_and_logits(sage_dir: tuple[SageModel, Path]) -> None:
    model, folder = sage_dir
    teacher = build_teacher(TeacherConfig(kind="sage", weights=str(folder), layer=0))
    q = canvases()
    codes = teacher.codes_for(["fpB", "unknown"], [1, 0])
    out = teacher.encode(q, codes=codes)
    with torch.no_grad():
        want = model(q, codes, 2)[0]
    assert out["features"].shape == (2, 900, 32) and out["logits"].shape == (2, 30, 30, 11)
    assert torch.allclose(out["features"], want.state[:, 2:], atol=1e-5)
    assert torch.allclose(out["logits"], want.logits, atol=1e-5)
    assert torch.equal(codes[0], teacher.codes.table[3])  # fpB's second variant
    assert torch.allclose(codes[1], teacher.codes.mean()[0])  # an unseen task gets the mean code


def test_teacher_targets_for_a_training_batch(sage_dir: tuple[SageModel, Path]) -> None:
    teacher = build_teacher({"kind": "sage", "weights": str(sage_dir[1])})
    batch = {"inputs": canvases(3), "outputs": torch.zeros(3, 30, 30, dtype=torch.long)}
    grid = teacher_targets(teacher, batch, pool="grid")
    spatial = teacher_targets(teacher, batch, pool="3x3")
    assert grid["features"].shape == (3, 1, 32) and spatial["features"].shape == (3, 9, 32)
    assert grid["logits"].shape == (3, 30, 30, 11)
    assert torch.allclose(grid["features"][:, 0], spatial["features"].mean(1), atol=1e-5)  # 3x3 tiles 30x30


def test_config_errors_are_clear(sage_dir: tuple[SageModel, Path], tmp_path: Path) -> None:
    with pytest.raises(SageError, match="needs --tokenizer"):
        build_teacher({"kind": "groot", "weights": str(tmp_path)})
    with pytest.raises(SageError, match="KxK"):
        build_teacher({"kind": "sage", "weights": str(sage_dir[1]), "pool": "big"})
    with pytest.raises(SageError, match="step must be"):
        build_teacher({"kind": "sage", "weights": str(sage_dir[1]), "layer": 5})
