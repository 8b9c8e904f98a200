"""The SAGE ARC model: sequences, the document mask, KV-cached decoding, the vote, model folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sage_distill.arc.augment import Augmentation
from sage_distill.errors import SageError
from sage_distill.student import SageConfig, SageModel
from sage_distill.student.checkpoint import MAX_SHARD_BYTES, load_model, save_model
from sage_distill.student.configuration_sage import END, NEWLINE
from sage_distill.student.generate import (
    Candidate,
    Job,
    Tally,
    TorchSteps,
    advance,
    generate,
    rescore,
    sequence_logprobs,
    view_augmentations,
)
from sage_distill.student.modeling_sage import KVCache, document_mask
from sage_distill.student.sequences import decode_output, encode_pair


def tiny(num_tasks: int = 3, **kw) -> SageModel:
    torch.manual_seed(0)
    return SageModel(SageConfig.preset("tiny").model_copy(update={"num_tasks": num_tasks, **kw})).eval()


def grid(*rows) -> np.ndarray:
    return np.array(rows, dtype=np.uint8)


def test_presets_respect_the_size_limits() -> None:
    small, large = SageModel(SageConfig.preset("small")), SageModel(SageConfig.preset("large"))
    fast, tiny = SageModel(SageConfig.preset("small-fast")), SageModel(SageConfig.preset("student-tiny"))
    # the distillation issue's students: small <= a third of the teacher and <= 8M, tiny <= 2M
    for student in (small, fast):
        assert 3 * student.shared_parameters() <= large.shared_parameters() and student.shared_parameters() <= 8e6
    # small-fast is the shallower one: a CPU decoding step reads layers x hidden keys and values per token
    kv_width = [m.config.layers * m.config.hidden for m in (small, fast, large)]
    assert fast.shared_parameters() == 5_585_472 and kv_width[1] * 2.8 <= kv_width[2] < kv_width[0] * 2.1
    assert 1e6 < tiny.shared_parameters() <= 2e6 and 15e6 < large.shared_parameters() <= 32e6


def test_a_pair_encodes_with_rows_newlines_positions_and_roles() -> None:
    aug = Augmentation(0, (0, 2, 1, 3, 4, 5, 6, 7, 8, 9))
    e = encode_pair(grid([1, 2], [3, 0]), grid([5]), aug)
    assert e.tokens.tolist() == [11, 2, 1, 10, 3, 0, 10, 12, 5, 10, 13]
    assert e.pos.tolist() == [[0, 0, 0], [1, 1, 0], [1, 2, 0], [1, 3, 0], [2, 1, 0], [2, 2, 0], [2, 3, 0],
                              [0, 0, 1], [1, 1, 1], [1, 2, 1], [2, 0, 1]]
    assert e.role.tolist() == [-1, 1, 2, -1, 3, 0, -1, -1, 5, -1, -1]  # colours before the permutation
    assert e.output_start == 7 and decode_output(e.tokens[8:]).tolist() == [[5]]


@pytest.mark.parametrize("tokens", [[1, 2, 10, 3, 10, 13], [10, 13], [1, 2, 10], [1, 11, 10, 13], [13],
                                    [1] * 31 + [10, 13]])
def test_decode_output_refuses_what_is_not_a_grid(tokens) -> None:
    assert decode_output(tokens) is None


def test_packed_documents_do_not_see_each_other() -> None:
    m = tiny()
    a = encode_pair(grid([1, 2]), grid([3]), Augmentation())
    b = encode_pair(grid([4], [5]), grid([6, 7]), Augmentation(3))
    cat = lambda *xs: torch.from_numpy(np.concatenate(xs))[None]  # noqa: E731
    n_a, n_b = len(a.tokens), len(b.tokens)
    doc = torch.tensor([[0] * n_a + [1] * n_b])
    task = torch.tensor([[0] * n_a + [1] * n_b])
    view = torch.tensor([[0] * n_a + [3] * n_b])
    packed = m(cat(a.tokens, b.tokens), cat(a.pos, b.pos), task, view, cat(a.role, b.role), document_mask(doc))
    alone = m(cat(b.tokens), cat(b.pos), task[:, n_a:], view[:, n_a:], cat(b.role), document_mask(doc[:, n_a:]))
    assert torch.allclose(packed[:, n_a:], alone, atol=1e-5)


def test_cached_decoding_reproduces_the_full_forward_pass() -> None:
    m = tiny()
    rng = np.random.default_rng(0)
    e = encode_pair(rng.integers(0, 10, (3, 4)).astype(np.uint8), rng.integers(0, 10, (2, 5)).astype(np.uint8),
                    Augmentation(5, (0, 3, 2, 1, 4, 5, 6, 7, 9, 8)))
    t = lambda a: torch.from_numpy(a)[None]  # noqa: E731
    n, p = len(e.tokens), e.output_start + 1
    full = m(t(e.tokens), t(e.pos), torch.full((1, n), 2), torch.full((1, n), 5), t(e.role),
             document_mask(torch.zeros(1, n, dtype=torch.long)))
    cache = KVCache.empty(m.config, 1, n + 3, torch.device("cpu"), torch.float32)
    cache.key_valid[:, :p] = True
    mask = torch.ones(p, p, dtype=torch.bool).tril()[None, None]
    steps = [m(t(e.tokens[:p]), t(e.pos[:p]), torch.full((1, p), 2), torch.full((1, p), 5), t(e.role[:p]), mask,
               cache)[:, -1]]
    row, col = np.ones(1, dtype=np.int64), np.ones(1, dtype=np.int64)
    for i in range(p, n - 1):
        tok = np.array([int(e.tokens[i])])
        pos, row, col = advance(tok, row, col)
        assert pos[0].tolist() == e.pos[i].tolist()  # the decoder's cursor places tokens as training did
        cache.key_valid[:, cache.length] = True
        tok, pos = torch.from_numpy(tok), torch.from_numpy(pos)
        steps.append(m(tok[:, None], pos[:, None], torch.full((1, 1), 2), torch.full((1, 1), 5),
                       torch.tensor([[int(e.role[i])]]), cache.key_valid[:, None, None, :], cache)[:, -1])
    assert torch.allclose(torch.cat(steps), full[0, p - 1:n - 1], atol=1e-5)


def test_batched_generation_equals_one_job_at_a_time() -> None:
    m = tiny(2)
    with torch.no_grad():
        m.head.weight.normal_(0, 0.5)  # varied lengths, so finished rows are dropped mid-batch
    rng = np.random.default_rng(0)
    jobs = [Job(rng.integers(0, 10, (int(rng.integers(1, 6)), int(rng.integers(1, 6)))).astype(np.uint8), a, i % 2)
            for i, a in enumerate(view_augmentations("abcdef0123456789", 20))]
    batched = generate(m, jobs, max_new=60)
    for job, b in zip(jobs, batched, strict=True):
        s = generate(m, [job], max_new=60)[0]
        assert abs(s.logprob - b.logprob) < 1e-3 and (s.grid is None) == (b.grid is None)


def test_a_model_that_writes_the_answer_is_decoded_and_mapped_back() -> None:
    """Bias the head to emit '3 3 <newline> <end>': every view must return [[3, 3]] mapped back."""
    m = tiny(1)
    with torch.no_grad():
        m.head.weight.zero_()
    script = iter([3, 3, NEWLINE, END])
    real_forward = m.forward

    def forced(*a, **k):
        logits = real_forward(*a, **k)
        logits[:, -1, next(script, END)] += 100.0
        return logits
    m.forward = forced
    aug = Augmentation(2, (0, 5, 2, 4, 3, 1, 6, 7, 8, 9))  # colour 4 is written as 3 under this view
    (c,) = generate(m, [Job(grid([1, 2]), aug, 0)], max_new=10, drafts=0)  # the script counts calls: one token each
    assert c.grid.tolist() == [[4, 4]] and -1e-3 < c.logprob <= 0


def test_views_are_deterministic_unique_and_start_with_the_dihedral_group() -> None:
    v = view_augmentations("0123456789abcdef", 24)
    assert v == view_augmentations("0123456789abcdef", 24) and len(set(v)) == 24
    assert [a.dihedral for a in v[:8]] == list(range(8)) and all(a.colors == tuple(range(10)) for a in v[:8])
    assert all(a.colors[0] == 0 for a in v)


def test_teacher_forced_likelihood_equals_the_decoding_likelihood() -> None:
    """The re-scoring's one causal pass gives each answer the log-likelihood the KV-cached decoder would
    accumulate token by token (prefill, then one step per output token), whatever the batch's padding."""
    m = tiny(2)
    with torch.no_grad():
        m.head.weight.normal_(0, 0.5)
    rng = np.random.default_rng(1)
    items = [(Job(rng.integers(0, 10, (int(rng.integers(1, 5)), int(rng.integers(1, 5)))).astype(np.uint8), a, i % 2),
              rng.integers(0, 10, (int(rng.integers(1, 4)), int(rng.integers(1, 4)))).astype(np.uint8))
             for i, a in enumerate(view_augmentations("0123456789abcdef", 10))]
    scores = sequence_logprobs(m, items, tokens_per_batch=64)
    assert scores == pytest.approx([_decoder_logprob(m, j, out) for j, out in items], abs=1e-3)
    assert scores == pytest.approx([sequence_logprobs(m, [it], 1)[0] for it in items], abs=1e-4)


@torch.no_grad()
def _decoder_logprob(m: SageModel, job: Job, out: np.ndarray) -> float:
    steps = TorchSteps(m)
    prompt, full = encode_pair(job.grid, None, job.aug), encode_pair(job.grid, out, job.aug)
    t = lambda x: torch.from_numpy(x)[None]  # noqa: E731
    logits = steps.prefill(t(prompt.tokens), t(prompt.pos), torch.tensor([[job.task_row]]),
                           torch.tensor([[job.aug.dihedral]]), t(prompt.role), torch.ones(1, len(prompt.tokens),
                                                                                          dtype=torch.bool), 40)
    total = 0.0
    for k in range(full.output_start + 1, len(full.tokens)):
        total += float(torch.log_softmax(logits[0].float(), -1)[full.tokens[k]])
        logits = steps.step(t(full.tokens[k:k + 1]), t(full.pos[k:k + 1]), torch.tensor([[job.task_row]]),
                            torch.tensor([[job.aug.dihedral]]), t(full.role[k:k + 1]))[:, -1]
        steps.commit(np.array([1]))
    return total


def test_rescoring_ranks_the_leaders_by_likelihood_over_every_view() -> None:
    m = tiny(1)
    test_input = grid([1, 2], [2, 1])
    views = [Job(test_input, a, 0) for a in view_augmentations("fedcba9876543210", 4)]
    a, b, c = grid([1]), grid([2, 2]), grid([3])
    tally = Tally.empty()
    tally.add([Candidate(a, -1.0), Candidate(a, -1.0), Candidate(a, -1.0), Candidate(b, -2.0), Candidate(c, -3.0),
               Candidate(test_input, 0.0)], test_input)
    rescore(m, [tally], [views], count=2, tokens_per_batch=256)
    expected = {k: sum(sequence_logprobs(m, [(j, tally.grids[k])], 1)[0] for j in views) for k in tally.poe}
    assert set(tally.poe) == set(tally.leaders(2)) and len(tally.poe) == 2  # the copy and c are not re-scored
    assert tally.poe == pytest.approx(expected)
    best = max(tally.poe, key=tally.poe.get)
    assert _same(tally.ranked()[0], tally.grids[best]) and _same(tally.ranked(by_votes=True)[0], a)


def _same(x: np.ndarray, y: np.ndarray) -> bool:
    return x.shape == y.shape and bool((x == y).all())


def test_the_vote_ranks_by_count_then_likelihood_and_never_prefers_a_copy() -> None:
    test_input = grid([1, 1])
    tally = Tally.empty()
    a, b, c = grid([2]), grid([3]), grid([4])
    tally.add([Candidate(a, -5.0), Candidate(b, -1.0), Candidate(a, -5.0), Candidate(b, -1.0), Candidate(c, -0.1),
               Candidate(None, 0.0), Candidate(test_input, 0.0), Candidate(test_input, 0.0),
               Candidate(test_input, 0.0)], test_input)
    assert [g.tolist() for g in tally.ranked()[:3]] == [[[3]], [[2]], [[4]]]  # b wins the tie on likelihood
    assert tally.invalid == 1 and tally.views == 9
    assert tally.attempts(test_input) == {"attempt_1": [[3]], "attempt_2": [[2]]}
    assert tally.leader_share() == pytest.approx(2 / 5)
    assert tally.top_two_settled(0) and not tally.top_two_settled(1)
    only_copies = Tally.empty()
    only_copies.add([Candidate(test_input, -1.0)], test_input)
    assert only_copies.attempts(grid([9]))["attempt_1"] == [[1, 1]]


@pytest.mark.parametrize("precision", ["bf16", "int8", "int4"])
def test_model_folders_round_trip_in_shards(tmp_path, monkeypatch, precision) -> None:
    import sage_distill.student.checkpoint as ckpt

    monkeypatch.setattr(ckpt, "MAX_SHARD_BYTES", 40_000)  # force several shards
    m = tiny(3)
    save_model(tmp_path, m, ["fa", "fb", "fc"], precision=precision)
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 1 and all(s.stat().st_size <= 60_000 for s in shards)
    loaded, fps = load_model(tmp_path)
    assert fps == ["fa", "fb", "fc"]
    tol = {"bf16": 0.01, "int8": 0.02, "int4": 0.15}[precision]  # int4: half a step of 1/7 of a group's max
    for (name, a), b in zip(m.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=tol * float(a.abs().max()) + 1e-6), name
    dtypes = {t.dtype for s in shards for t in load_file(s).values()}
    assert (torch.int8 in dtypes) == (precision == "int8") and (torch.uint8 in dtypes) == (precision == "int4")


def test_int4_packs_two_values_a_byte_with_a_scale_per_group() -> None:
    from sage_distill.utils.quantize import GROUP, dequantize, quantize

    torch.manual_seed(0)
    w = torch.randn(3, 2 * GROUP)
    w[0, 5] = 40.0  # an outlier coarsens only its own group
    stored = quantize({"w": w, "odd": torch.randn(2, GROUP + 1), "v": torch.randn(4)}, "int4")
    assert stored["w"].dtype == torch.uint8 and list(stored["w"].shape) == [3, GROUP]
    assert list(stored["w.scale"].shape) == [3, 2] and stored["odd"].dtype == torch.int8
    back = dequantize(stored)["w"]
    step = stored["w.scale"].float().repeat_interleave(GROUP, dim=1)
    inside = w.abs() <= 7 * step  # values within the (possibly clipped) range: half a step at most
    assert bool(((back - w).abs() <= step / 2 + 1e-4)[inside].all()) and bool(inside.float().mean() > 0.9)
    scale = stored["w.scale"].float()
    assert 0.5 * 40 / 7 <= float(scale[0, 0]) <= 40 / 7 * 1.001 and float(scale[0, 1]) < 1.0


def test_int4_scales_clip_when_that_lowers_the_error_and_never_raise_it() -> None:
    from sage_distill.utils.quantize import GROUP, int4_scales

    torch.manual_seed(0)
    groups = torch.randn(64, 4, GROUP)
    groups[:, 0, 0] = 6.0  # a moderate outlier in every first group

    def error(scale):
        return ((torch.round(groups / scale).clamp(-8, 7) * scale - groups) ** 2).sum(dim=2, keepdim=True)

    absmax = groups.abs().amax(dim=2, keepdim=True) / 7
    chosen = int4_scales(groups)
    assert bool((error(chosen) <= error(absmax) + 1e-6).all())
    assert float(error(chosen).sum()) < 0.95 * float(error(absmax).sum())  # 0.90 on this seed
    assert float((chosen[:, 0] < absmax[:, 0]).float().mean()) > 0.5  # most outlier groups were clipped


def test_broken_model_folders_are_refused_by_name(tmp_path) -> None:
    save_model(tmp_path, tiny(2), ["fa", "fb"])
    shard = next(tmp_path.glob("model*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(SageError, match="truncated"):
        load_model(tmp_path)
    (tmp_path / "tasks.json").unlink()
    with pytest.raises(SageError, match="missing tasks.json"):
        load_model(tmp_path)


def _edit_config(folder, **update) -> None:
    import json

    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **update}))


def test_config_json_is_bounded_and_checked_against_the_weights_before_building(tmp_path) -> None:
    save_model(tmp_path, tiny(2), ["fa", "fb"])
    cfg = tmp_path / "config.json"
    _edit_config(tmp_path, num_tasks=1e9)
    with pytest.raises(SageError, match=rf"^{cfg}: num_tasks: Input should be less than or equal to 200000 "):
        load_model(tmp_path)
    _edit_config(tmp_path, num_tasks=2, heads=3)  # 64 // 3 = 21: no rotary halves
    with pytest.raises(SageError, match=r"config.json: hidden // heads must be an even number >= 2, got 64 // 3$"):
        load_model(tmp_path)
    # Within every bound, yet ~1 TB if built: refused by the shards' header, before anything is allocated.
    _edit_config(tmp_path, hidden=8192, heads=64, layers=128, mlp_hidden=65536)
    with pytest.raises(SageError, match=r"config.json: blocks.0.attn.k_norm.weight has shape \[16\] in "
                                        r"model.safetensors, config.json's model needs \[128\]$"):
        load_model(tmp_path)


def test_a_header_whose_shapes_exceed_its_bytes_is_refused(tmp_path) -> None:
    import json

    from safetensors.torch import save_file

    from sage_distill.utils.io import read_safetensors_header

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(2, 3)}, path)
    assert read_safetensors_header(path)["a"]["shape"] == [2, 3]
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header["a"]["shape"] = [1_000_000_000, 3]  # what a 200 KB folder would need to ask for gigabytes
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n:])
    with pytest.raises(SageError, match=r"w.safetensors: a: shape \[1000000000, 3\] \(F32\) does not fit its 24 "
                                        "bytes"):
        read_safetensors_header(path)


RELEASES = Path(__file__).resolve().parents[1] / "models"


@pytest.mark.parametrize("name", ["sage-arc", "sage-arc-small"])
def test_a_released_model_loads_fits_its_shard_limit_and_its_card_names_its_size(name: str) -> None:
    folder = RELEASES / name
    card = (folder / "MODEL_CARD.md").read_text()
    assert all(f.stat().st_size <= MAX_SHARD_BYTES for f in folder.glob("*.safetensors"))
    model, fingerprints = load_model(folder)
    assert len(fingerprints) == model.config.num_tasks == 1142
    assert f"{model.shared_parameters():,}" in card
    # the three releases (two ARC models, the control policy) stay inside the repository's 30 MB with the rest
    # (every device call carries them)
    assert sum(f.stat().st_size for f in RELEASES.rglob("*") if f.is_file()) < 26e6
