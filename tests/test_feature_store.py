"""The feature store: resumable byte-identical extraction, validation, lazy reading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import SiglipVisionConfig, SiglipVisionModel
from typer.testing import CliRunner

from sage_distill.arc import load_dataset
from sage_distill.cli import app
from sage_distill.distill.sage_teacher import SageTeacher
from sage_distill.errors import SageError
from sage_distill.student import SageConfig, SageModel
from sage_distill.student.checkpoint import save_model
from sage_distill.teachers import batch_keys, build_teacher
from sage_distill.teachers.base import to_canvas
from sage_distill.teachers.extract import extract, plan
from sage_distill.teachers.groot import GrootArch, GrootBackbone, GrootTeacher, placeholder_text_ids
from sage_distill.teachers.store import FeatureStore
from sage_distill.teachers.store_check import validate_store

TASKS = load_dataset("arc1", "training")[:5]
SOURCE = {"weights": "tiny", "dataset": "arc1", "split": "training"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SigLIP vision tower: 28-pixel images, a 2x2 patch grid, 32 dims."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("siglip")
    SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, image_size=28, patch_size=14)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def teacher(hf_dir: Path):
    return build_teacher({"kind": "hf", "weights": str(hf_dir)})


def shift(canvases: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Each grid moved down/right by its (rows, cols) offset on its canvas (10 = outside)."""
    out = torch.full_like(canvases, 10)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i, dy:, dx:] = canvases[i, : 30 - dy, : 30 - dx]
    return out


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


class Killed(Exception):
    pass


def run(teacher, out: Path, kill_after: int | None = None, **kw) -> dict:
    def on_shard(i: int) -> None:
        if kill_after is not None and i + 1 >= kill_after:
            raise Killed
    kw = {"pool": "2x2", "batch_size": 3, "shard_size": 4, "store_dtype": "float32", **kw}
    return extract(teacher, TASKS, out, source=SOURCE, on_shard=on_shard, progress=False, **kw)


def test_killed_run_resumes_to_identical_bytes(teacher, tmp_path: Path) -> None:
    whole = run(teacher, tmp_path / "whole")
    n_shards = len(whole["shards"])
    assert n_shards >= 4 and whole["complete"]
    with pytest.raises(Killed):
        run(teacher, tmp_path / "resumed", kill_after=2)
    partial = json.loads((tmp_path / "resumed" / "manifest.json").read_text())
    assert len(partial["shards"]) == 2 and not partial["complete"]
    with pytest.raises(SageError, match="incomplete"):
        validate_store(tmp_path / "resumed")
    # A shard written but never recorded (killed before the manifest update) and one gone bad later.
    (tmp_path / "resumed" / "shard-00002.safetensors").write_bytes(b"half a shard")
    (tmp_path / "resumed" / "shard-00001.safetensors").write_bytes(b"corrupted")
    run(teacher, tmp_path / "resumed")  # resume: the same command again
    assert files(tmp_path / "resumed") == files(tmp_path / "whole")


def test_resume_only_recomputes_missing_shards(teacher, tmp_path: Path) -> None:
    with pytest.raises(Killed):
        run(teacher, tmp_path / "s", kill_after=3)
    redone = []
    extract(teacher, TASKS, tmp_path / "s", source=SOURCE, pool="2x2", batch_size=3, shard_size=4,
            store_dtype="float32", on_shard=redone.append, progress=False)
    n = len(json.loads((tmp_path / "s" / "manifest.json").read_text())["shards"])
    assert redone == list(range(3, n))


def test_resume_with_other_settings_is_refused(teacher, tmp_path: Path) -> None:
    with pytest.raises(Killed):
        run(teacher, tmp_path / "s", kill_after=1)
    with pytest.raises(SageError, match="other settings"):
        run(teacher, tmp_path / "s", pool="grid")


def test_manifest_records_shapes_checksums_and_rows(teacher, tmp_path: Path) -> None:
    manifest = run(teacher, tmp_path / "s")
    spec = manifest["spec"]
    assert (spec["teacher"], spec["layer"], spec["pooling"], spec["dtype"]) == ("hf", -1, "2x2", "float32")
    assert manifest["shards"][0]["shapes"] == {"features": [4, 4, 32]}
    assert all(len(s["sha256"]) == 64 for s in manifest["shards"])
    rows, _ = plan(TASKS, "none")
    assert manifest["rows"] == rows
    assert sum(s["count"] for s in manifest["shards"]) == len(rows)
    assert all(r["place"].split()[0] in ("train", "test") for r in rows)


def test_validate_reports_and_catches_corruption(teacher, tmp_path: Path) -> None:
    run(teacher, tmp_path / "s")
    summary = validate_store(tmp_path / "s")
    assert summary["coverage"] == {"tasks": "5 of 400", "grids": summary["rows"]}
    assert summary["feature_shape"] == [4, 32] and summary["dims"]["dead_dims"] == 0
    shard = tmp_path / "s" / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(SageError, match="shard-00001.safetensors: checksum mismatch"):
        validate_store(tmp_path / "s")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "sage_distill", "features", "validate", str(tmp_path / "s")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "checksum mismatch" in proc.stderr


def test_validate_catches_nan(teacher, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from sage_distill.teachers.store import sha256_file
    from sage_distill.utils.io import atomic_save_safetensors, atomic_write_json

    manifest = run(teacher, tmp_path / "s")
    shard = tmp_path / "s" / "shard-00000.safetensors"
    tensors = load_file(shard)
    tensors["features"][1, 0, 3] = float("nan")
    atomic_save_safetensors(shard, tensors)
    manifest["shards"][0]["sha256"] = sha256_file(shard)  # a store written with NaN, checksums intact
    atomic_write_json(tmp_path / "s" / "manifest.json", manifest)
    with pytest.raises(SageError, match="1 NaN/Inf"):
        validate_store(tmp_path / "s")


def test_lazy_dataset_with_workers_and_lookup(teacher, tmp_path: Path) -> None:
    run(teacher, tmp_path / "s")
    store = FeatureStore(tmp_path / "s")
    rows, inputs = plan(TASKS, "none")
    assert len(store) == len(rows)
    loader = torch.utils.data.DataLoader(store, batch_size=5, num_workers=2)
    stacked = torch.cat([b["features"] for b in loader])
    assert stacked.shape == (len(rows), 4, 32)
    from sage_distill.teachers.base import canvases_of, pool_tokens

    q, _ = canvases_of(inputs[5:7])
    want = pool_tokens(teacher.encode(q)["features"], teacher.tokens_hw, "2x2")
    assert torch.allclose(stacked[5:7], want, atol=1e-5)
    got = store.lookup([rows[6]["key"], "not-a-key", rows[0]["key"]])
    assert got["mask"].tolist() == [True, False, True]
    assert torch.allclose(got["features"][0], stacked[6]) and got["features"][1].abs().sum() == 0
    # Grids find their rows by content, wherever they sit on the canvas.
    canvases = torch.from_numpy(np.stack([to_canvas(inputs[i].query) for i in (3, 8)])).long()
    moved = shift(canvases, torch.tensor([[0, 0], [1, 2]]))
    hit = store.lookup(batch_keys(moved))
    assert hit["mask"].all() and torch.allclose(hit["features"], stacked[[3, 8]])
    mean, std = store.stats()
    flat = stacked.flatten(0, 1)
    assert torch.allclose(mean, flat.mean(0), atol=1e-5) and torch.allclose(std, flat.std(0, unbiased=False), atol=1e-4)


def test_groot_store_with_demo_context(tmp_path: Path) -> None:
    torch.manual_seed(0)
    groot = GrootTeacher(GrootBackbone(GrootArch.tiny()), placeholder_text_ids)
    manifest = extract(groot, TASKS[:2], tmp_path / "g", source=SOURCE, pool="none", context="demos",
                       batch_size=4, shard_size=8, store_dtype="bfloat16", progress=False)
    assert manifest["shards"][0]["shapes"]["features"][1:] == [4, 16]
    assert validate_store(tmp_path / "g")["coverage"]["tasks"] == "2 of 400"


def test_cli_extract_then_validate(hf_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["extract", "--teacher", "hf", "--weights", str(hf_dir), "--dataset", "arc1", "--split",
            "evaluation", "--out", str(tmp_path / "cli"), "--pool", "grid", "--limit", "2", "--shard-size", "8"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "ok:" in result.output and "[1, 32] bfloat16" in result.output
    result = runner.invoke(app, ["features", "validate", str(tmp_path / "cli")])
    assert result.exit_code == 0 and '"pooling": "grid"' in result.output


def test_extract_refuses_the_online_sage_teacher(cli, tmp_path: Path) -> None:
    folder = tmp_path / "sage"
    save_model(folder, SageModel(SageConfig(hidden=32, heads=2, layers=1, mlp_hidden=64, num_tasks=1)), ["fp"])
    code, _, err = cli("extract", "--teacher", "sage", "--weights", str(folder), "--dataset", "arc1",
                       "--split", "training", "--out", str(tmp_path / "s"), "--limit", "1")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--teacher" in err and "online" in err and "groot and hf" in err
    assert not (tmp_path / "s").exists()
    with pytest.raises(SageError, match="does not read grids"):
        extract(SageTeacher(folder), TASKS[:1], tmp_path / "s", source=SOURCE, progress=False)
    assert not (tmp_path / "s").exists()
