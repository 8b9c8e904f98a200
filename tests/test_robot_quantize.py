"""`robot quantize`: a policy folder re-stored in bf16 or int8 loads as a policy whose chunks stay close to the
fp32 one's (int8: every kernel and matrix per output row, conv kernels included; vectors and normalisers fp32),
and bad input is refused with one `error:` line (exit 2) before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from conftest import tiny_policy
from sage_distill.errors import SageError
from sage_distill.robot.envs import MT10
from sage_distill.robot.train import load_policy

PIXELS = {"obs": "pixels", "image_size": 32, "channels": (8, 8, 16, 16)}


def chunks(policy: torch.nn.Module, n: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    cfg = policy.cfg
    batch = {"pixels": torch.randint(0, 256, (n, 32, 32, 3), generator=g, dtype=torch.uint8),
             "proprio": torch.randn(n, 8, generator=g) * 3 + 1, "task_index": torch.randint(0, 50, (n,), generator=g)}
    noise = torch.randn(n, cfg.chunk, cfg.action_dim, generator=g)
    return policy.sample(batch, noise=noise)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("quantize") / "fp32"
    tiny_policy(folder, **PIXELS)
    return folder


@pytest.mark.parametrize("precision, bound", [("bf16", 0.02), ("int8", 0.05)])
def test_quantized_policy_stays_close(cli, fp32: Path, tmp_path: Path, precision: str, bound: float) -> None:
    out = tmp_path / precision
    code, stdout, _ = cli("robot", "quantize", "--policy", fp32, "--out", out, "--precision", precision)
    assert code == 0 and f"({precision}," in stdout
    meta = json.loads((out / "config.json").read_text())
    assert meta["precision"] == precision and meta["tasks"] == ["reach-v3", "push-v3"]
    ref, (small, tasks) = load_policy(fp32)[0], load_policy(out)
    assert tasks == meta["tasks"]
    diff = (chunks(small) - chunks(ref)).abs()
    assert 0 < diff.max() < bound, diff.max()  # changed (it is quantised), and not by much
    ratio = (out / "model.safetensors").stat().st_size / (fp32 / "model.safetensors").stat().st_size
    assert ratio < (0.55 if precision == "bf16" else 0.4), ratio


def test_int8_stores_kernels_per_row_and_vectors_in_fp32(cli, fp32: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8"
    assert cli("robot", "quantize", "--policy", fp32, "--out", out)[0] == 0  # int8 is the default
    with safe_open(out / "model.safetensors", "pt") as f:
        kernel = f.get_tensor("encoder.stages.0.0.weight")  # a 5x5 conv over 5 channels, 8 out
        scale = f.get_tensor("encoder.stages.0.0.weight.scale")
        mean = f.get_tensor("proprio_mean")
    assert kernel.dtype == torch.int8 and list(kernel.shape) == [8, 5 * 5 * 5] and list(scale.shape) == [8, 1]
    assert kernel.abs().amax(1).eq(127).all()  # each row spans its own scale
    assert mean.dtype == torch.float32
    assert torch.equal(mean, load_policy(fp32)[0].proprio_mean)  # normalisers exact


def test_quantize_refuses_bad_input_and_writes_nothing(cli, fp32: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    for args, words in [(["--precision", "int4"], "unsupported precision 'int4'"),
                        (["--out", full], "exists and is not empty"),
                        (["--policy", tmp_path / "absent"], "not a policy folder")]:
        opts = {"--policy": fp32, "--out": tmp_path / "new", **dict(zip(args[::2], args[1::2], strict=True))}
        code, _, err = cli("robot", "quantize", *[x for kv in opts.items() for x in kv])
        assert code == 2 and words in err and err.count("\n") == 1, err
        assert not (tmp_path / "new").exists() and [p.name for p in full.iterdir()] == ["keep.txt"]


def test_unknown_stored_precision_is_named(fp32: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((fp32 / "model.safetensors").read_bytes())
    meta = json.loads((fp32 / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**meta, "precision": "fp16"}))
    with pytest.raises(SageError, match="precision.*fp16|fp16.*precision"):
        load_policy(bad)


def test_the_released_control_policy_loads_in_int8_and_its_card_names_its_size() -> None:
    folder = Path(__file__).resolve().parents[1] / "models" / "sage-control"
    policy, tasks = load_policy(folder)
    meta = json.loads((folder / "config.json").read_text())
    card = (folder / "MODEL_CARD.md").read_text()
    assert meta["precision"] == "int8" and sorted(tasks) == sorted(MT10)
    assert f"{sum(p.numel() for p in policy.parameters()):,}" in card
    assert (folder / "model.safetensors").stat().st_size <= 15 * 2**20
