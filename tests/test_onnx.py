"""ONNX export and ONNX Runtime decoding on a tiny random SAGE model: the graphs' layout, the same
logits and tokens as the torch path, predict/eval `--runtime onnx`, int8, and bad input refused with
one `error:` line (exit 2) before anything is written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from arc_world import tiny_model_world
from sage_distill.evaluation.predict import PredictConfig, predict_file
from sage_distill.student.checkpoint import load_model
from sage_distill.student.generate import Job, TorchSteps, _generate, view_augmentations

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from sage_distill.export.onnx_graphs import export_model

    root = tmp_path_factory.mktemp("onnx")
    tasks, challenges, _ = tiny_model_world(root, 4)
    export_model(root / "model", root / "graphs", "fp32")
    return tasks, challenges, root / "model", root / "graphs"


class Recording:
    """Steps that remember every step's argmax token, to compare runtimes token by token."""

    def __init__(self, steps) -> None:
        self.inner, self.device, self.tokens, self.logits, self.kept = steps, steps.device, [], [], []

    def prefill(self, *args):
        out = self.inner.prefill(*args)
        self.logits.append(out.clone())
        return out

    def step(self, tokens, *args):
        self.tokens.append(tokens.clone())
        out = self.inner.step(tokens, *args)
        self.logits.append(out.clone())
        return out

    def commit(self, counts) -> None:
        self.kept.append(counts.copy())
        self.inner.commit(counts)

    def keep(self, rows) -> None:
        self.inner.keep(rows)


def test_the_graphs_have_the_past_and_present_layout_and_a_manifest(world) -> None:
    *_, graphs = world
    meta = json.loads((graphs / "sage-onnx.json").read_text())
    assert meta["precision"] == "fp32" and meta["opset"] <= 20 and meta["slots"] == 2
    assert meta["tasks"]["unknown_row"] == 3 and len(meta["tasks"]["fingerprints"]) == 3
    step = onnx.load(str(graphs / "decode_step.onnx"), load_external_data=False)
    names = [i.name for i in step.graph.input]
    assert names[:6] == ["input_ids", "position_ids", "task_ids", "view_ids", "role_ids", "attention_mask"]
    assert names[6:] == [f"{part}_key_values.{i}.{kv}" for part in ("prompt", "past") for i in range(2)
                         for kv in ("key", "value")]
    assert [o.name for o in step.graph.output] == ["logits"] + [f"present.{i}.{kv}" for i in range(2)
                                                                for kv in ("key", "value")]
    assert max(o.version for o in step.opset_import if o.domain in ("", "ai.onnx")) <= 20
    assert all(f.stat().st_size < 1 << 20 for f in graphs.iterdir())  # tiny: nothing large for CI


@pytest.mark.parametrize("block", [8, 64])  # 8: the answer buffer grows four times over the 40 steps
def test_onnx_runtime_decodes_the_same_tokens_as_torch(world, block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from sage_distill.student import onnx_runtime
    from sage_distill.student.onnx_runtime import OnnxSage

    monkeypatch.setattr(onnx_runtime, "BLOCK", block)
    _, _, model_dir, graphs = world
    model, _ = load_model(model_dir)
    rng = np.random.default_rng(1)
    jobs = []
    for i in range(6):  # different prompt lengths: left padding; views with permuted colours: roles
        grid = rng.integers(0, 10, (int(rng.integers(1, 6)), int(rng.integers(1, 6)))).astype(np.uint8)
        jobs += [Job(grid, aug, i % 3) for aug in view_augmentations("0123456789abcdef", 10)[7:10]]
    torch_steps, onnx_steps = Recording(TorchSteps(model)), Recording(OnnxSage(graphs).steps())
    with torch.no_grad():
        a = _generate(torch_steps, jobs, max_new=40)  # 40 > 16 + 16: exercises dropping finished rows too
    b = _generate(onnx_steps, jobs, max_new=40)
    assert len(torch_steps.tokens) == len(onnx_steps.tokens) > 16
    for x, y in zip(torch_steps.tokens, onnx_steps.tokens, strict=True):
        assert torch.equal(x, y)  # the chosen token and the same guesses after it
    assert all(np.array_equal(x, y) for x, y in zip(torch_steps.kept, onnx_steps.kept, strict=True))
    assert sum(int((k > 1).sum()) for k in onnx_steps.kept) > 0  # some rows kept guesses (the cache has holes)
    for x, y in zip(torch_steps.logits, onnx_steps.logits, strict=True):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)
    for x, y in zip(a, b, strict=True):
        assert (x.grid is None) == (y.grid is None) and abs(x.logprob - y.logprob) < 1e-3
    inner = onnx_steps.inner  # whole blocks, grown only when a step's tokens did not fit
    assert inner.past[0].shape[2] % block == 0 and inner.past[0].shape[2] - block < inner.written + inner.fed


def test_onnx_prefill_runs_each_prompt_length_without_padding(world) -> None:
    """Prefill is compute-bound: each group of equal-length prompts runs unpadded, once."""
    from sage_distill.student.onnx_runtime import OnnxSage
    from sage_distill.student.sequences import encode_pair

    *_, graphs = world
    runner, masks = OnnxSage(graphs), []
    session = runner.prefill

    class Spy:
        def run(self, names, feeds):
            masks.append(feeds["attention_mask"])
            return session.run(names, feeds)

    runner.prefill = Spy()
    grids = [np.ones((h, w), dtype=np.uint8) for h, w in ((1, 2), (3, 4), (2, 1), (3, 4))]
    jobs = [Job(g, aug, 0) for g in grids for aug in view_augmentations("0123456789abcdef", 2)]
    _generate(runner.steps(), jobs, max_new=2)
    lengths = sorted({len(encode_pair(j.grid, None, j.aug).tokens) for j in jobs})
    assert sorted(m.shape[1] for m in masks) == lengths and len(lengths) > 1 and all(m.all() for m in masks)
    assert sum(m.shape[0] for m in masks) == len(jobs)


def test_predict_with_the_onnx_runtime_gives_the_torch_answers(world, tmp_path) -> None:
    tasks, challenges, model_dir, graphs = world
    ref = predict_file(model_dir, challenges, tmp_path / "torch.json", PredictConfig(views=2))
    got = predict_file(graphs, challenges, tmp_path / "onnx.json", PredictConfig(views=2, runtime="onnx"))
    assert got["runtime"] == "onnx-fp32" and ref["runtime"] == "torch"
    assert got["unknown_tasks"] == ref["unknown_tasks"] == 1  # the fourth task: the graphs' mean row
    assert json.loads((tmp_path / "onnx.json").read_text()) == json.loads((tmp_path / "torch.json").read_text())


def test_int8_export_runs(world, tmp_path, cli) -> None:
    _, challenges, model_dir, _ = world
    code, out, err = cli("export", "--model", model_dir, "--out", tmp_path / "int8", "--precision", "int8")
    assert code == 0, err
    assert json.loads((tmp_path / "int8" / "sage-onnx.json").read_text())["precision"] == "int8"
    code, _, err = cli("predict", "--model", tmp_path / "int8", "--runtime", "onnx", "--challenges", challenges,
                       "--out", tmp_path / "p.json", "--views", "1", "--limit", "1")
    assert code == 0, err
    assert json.loads((tmp_path / "p.stats.json").read_text())["runtime"] == "onnx-int8"


def test_bad_input_is_one_error_line_and_writes_nothing(world, tmp_path, cli) -> None:
    _, challenges, model_dir, graphs = world
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "notamodel").mkdir()
    cases = [
        ("export", "--model", tmp_path / "notamodel", "--out", tmp_path / "o1"),
        ("export", "--model", tmp_path / "missing", "--out", tmp_path / "o1"),
        ("export", "--model", model_dir, "--out", tmp_path / "o1", "--precision", "fp16"),
        ("export", "--model", model_dir, "--out", tmp_path / "full"),
        ("predict", "--model", model_dir, "--runtime", "onnx", "--challenges", challenges, "--out",
         tmp_path / "o1" / "p.json"),
        ("eval", "--model", model_dir, "--runtime", "onnx", "--dataset", "arc1", "--out", tmp_path / "o1"),
        ("predict", "--model", graphs, "--runtime", "onnx", "--adapt-minutes", "1", "--challenges", challenges,
         "--out", tmp_path / "o1" / "p.json"),
        ("predict", "--model", graphs, "--runtime", "tensorrt", "--challenges", challenges, "--out",
         tmp_path / "o1" / "p.json"),
        ("demo", "--model", tmp_path / "notamodel", "--runtime", "onnx", "--out", tmp_path / "o1"),
    ]
    for args in cases:
        code, out, err = cli(*args)
        assert code == 2, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1, (args, err)
        assert not (tmp_path / "o1").exists(), args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "notamodel"]
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["x"]


def test_the_demo_cache_is_reused_while_the_weights_match(world, tmp_path) -> None:
    from sage_distill.export.onnx_graphs import cached_export

    _, _, model_dir, _ = world
    folder, made = cached_export(model_dir, tmp_path / "cache")
    assert made and (folder / "sage-onnx.json").is_file()
    assert cached_export(model_dir, tmp_path / "cache") == (folder, False)
    meta = json.loads((folder / "sage-onnx.json").read_text())
    (folder / "sage-onnx.json").write_text(json.dumps({**meta, "source_digest": "other weights"}))
    assert cached_export(model_dir, tmp_path / "cache") == (folder, True)
