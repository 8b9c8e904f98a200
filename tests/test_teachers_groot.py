"""The GR00T N1.5 backbone rebuilt from stock classes: checkpoint layout, refusal of mismatches, prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import load_script
from sage_distill.teachers.base import TeacherError
from sage_distill.teachers.groot import (
    IM_START,
    IMG_CONTEXT,
    IMG_END,
    IMG_START,
    GrootArch,
    GrootBackbone,
    GrootTeacher,
    placeholder_text_ids,
    prompt_ids,
)
from sage_distill.teachers.groot_checkpoint import load_groot, save_groot

ARCH = GrootArch.tiny()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[GrootBackbone, Path]:
    torch.manual_seed(0)
    model = GrootBackbone(ARCH)
    folder = tmp_path_factory.mktemp("groot")
    save_groot(model, folder, extra={"action_head.model.proj.weight": torch.ones(4, 4)})
    return model, folder


def queries(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 11, (n, 30, 30), generator=torch.Generator().manual_seed(seed))


def test_checkpoint_uses_groot_names(saved: tuple[GrootBackbone, Path]) -> None:
    _, folder = saved
    names = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(names.values())) > 1  # really sharded
    assert "backbone.eagle_model.vision_model.vision_model.embeddings.patch_embedding.weight" in names
    assert "backbone.eagle_model.mlp1.0.weight" in names
    assert "backbone.eagle_model.language_model.model.layers.1.self_attn.q_proj.weight" in names
    assert "backbone.eagle_model.language_model.model.norm.weight" in names
    assert not any(".head." in n or "lm_head" in n for n in names)


def test_reload_gives_identical_features(saved: tuple[GrootBackbone, Path]) -> None:
    model, folder = saved
    loaded, report = load_groot(folder, ARCH)
    assert report.ok and report.ignored == 1  # action_head.* is skipped, and said so
    q = queries()
    a = GrootTeacher(model, placeholder_text_ids).encode(q)["features"]
    b = GrootTeacher(loaded, placeholder_text_ids).encode(q)["features"]
    assert a.shape == (3, ARCH.tokens_per_image, ARCH.text_hidden)
    assert torch.equal(a, b)
    assert a.std() > 0.1  # after the final RMSNorm: unit-scale, not a constant


def _copy_checkpoint(src: Path, dst: Path, edit) -> None:
    dst.mkdir()
    index = json.loads((src / "model.safetensors.index.json").read_text())
    tensors = {}
    for shard in set(index["weight_map"].values()):
        tensors.update(load_file(src / shard))
    edit(tensors)
    save_file(tensors, dst / "model.safetensors")  # single-file layout: the loader takes both


@pytest.mark.parametrize("edit, problem, name", [
    (lambda t: t.pop("backbone.eagle_model.mlp1.0.bias"), "1 missing", "backbone.eagle_model.mlp1.0.bias"),
    (lambda t: t.__setitem__("backbone.eagle_model.language_model.model.norm.weight", torch.ones(7)),
     "1 misshapen", "backbone.eagle_model.language_model.model.norm.weight: checkpoint (7,) vs model (16,)"),
    (lambda t: t.__setitem__("backbone.eagle_model.language_model.model.layers.5.mlp.up_proj.weight",
                             torch.ones(2)), "1 unexpected", "model.layers.5.mlp.up_proj.weight"),
])
def test_mismatched_checkpoint_is_refused(saved: tuple[GrootBackbone, Path], tmp_path: Path, edit, problem: str,
                                          name: str) -> None:
    _, folder = saved
    _copy_checkpoint(folder, tmp_path / "bad", edit)
    with pytest.raises(TeacherError) as err:
        load_groot(tmp_path / "bad", ARCH)
    assert problem in str(err.value) and name in str(err.value)


def test_prompt_layout_images_first_then_instruction() -> None:
    ids = prompt_ids(2, ARCH.tokens_per_image, placeholder_text_ids)
    assert ids[0] == IM_START
    starts = [i for i, t in enumerate(ids) if t == IMG_START]
    ends = [i for i, t in enumerate(ids) if t == IMG_END]
    assert len(starts) == len(ends) == 2
    for s, e in zip(starts, ends, strict=True):
        assert ids[s + 1:e] == [IMG_CONTEXT] * ARCH.tokens_per_image
    assert ids.count(IMG_CONTEXT) == 2 * ARCH.tokens_per_image
    assert ends[-1] < len(ids) - 10  # the instruction follows the images


def test_context_changes_query_features_and_padding_does_not(saved: tuple[GrootBackbone, Path]) -> None:
    model, _ = saved
    teacher = GrootTeacher(model, placeholder_text_ids)
    q = queries()
    alone = teacher.encode(q)["features"]
    mixed = teacher.encode(q, [[q[1], q[2]], [], [q[0]]])["features"]
    assert torch.allclose(alone[1], mixed[1], atol=1e-6)  # row 1 is right-padded, nothing else changes
    assert not torch.allclose(alone[0], mixed[0], atol=1e-4)  # demos shown first reach the query tokens


def test_layer_truncation_reads_an_earlier_layer(saved: tuple[GrootBackbone, Path]) -> None:
    _, folder = saved
    full = GrootTeacher(load_groot(folder, ARCH)[0], placeholder_text_ids)
    first = GrootTeacher(load_groot(folder, ARCH)[0], placeholder_text_ids, layer=1)
    assert first.layer == 1 and len(first.model.language_model.model.layers) == 1
    assert not torch.allclose(full.encode(queries())["features"], first.encode(queries())["features"])
    with pytest.raises(TeacherError, match="layer must be 1..2"):
        GrootTeacher(load_groot(folder, ARCH)[0], placeholder_text_ids, layer=3)


def test_full_architecture_shapes_and_no_unused_heads() -> None:
    arch = GrootArch.full()
    assert arch.tokens_per_image == 256
    v, t = arch.vision_config(), arch.text_config()
    assert (v.hidden_size, v.num_hidden_layers, v.vision_use_head) == (1152, 27, False)
    assert (t.hidden_size, t.num_hidden_layers, t.num_key_value_heads, t.vocab_size) == (2048, 12, 8, 151680)
    assert t._attn_implementation == "sdpa" and v._attn_implementation == "sdpa"


def test_bench_smoke_on_cpu(tmp_path: Path) -> None:
    report = load_script("bench_groot").main(["--tiny", "--device", "cpu", "--batch-sizes", "1", "3", "--iters", "1",
                                              "--warmup", "0", "--out", str(tmp_path / "b.json")])
    saved = json.loads((tmp_path / "b.json").read_text())
    assert [r["batch"] for r in saved["results"]] == [1, 3] == [r["batch"] for r in report["results"]]
    assert saved["results"][1]["feature_shape"] == [3, ARCH.tokens_per_image, ARCH.text_hidden]
    assert all(r["images_per_s"] > 0 for r in saved["results"])
