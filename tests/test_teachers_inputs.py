"""Leak-free teacher inputs: no test output, no task id; rendering and pooling that line up with the canvas."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from sage_distill.arc import Task, load_dataset
from sage_distill.errors import SageError
from sage_distill.teachers.base import (
    PALETTE,
    TeacherInput,
    canvases_of,
    pool_tokens,
    query_key,
    render_canvases,
    teacher_inputs,
)
from sage_distill.teachers.extract import plan

TASKS = load_dataset("arc1", "training")[:20]


def test_a_task_with_test_outputs_is_refused_loudly() -> None:
    task = TASKS[0]
    assert task.has_answers
    with pytest.raises(SageError, match="test outputs"):
        teacher_inputs(task)
    with pytest.raises(SageError, match="test outputs"):
        teacher_inputs(task, context="demos")


@pytest.mark.parametrize("context", ["none", "demos"])
def test_no_test_output_reaches_any_teacher_input(context: str) -> None:
    for task in TASKS:
        answers = {g.tobytes() + bytes(g.shape) for g in task.test_outputs}
        seen = {g.tobytes() + bytes(g.shape) for ti, _ in teacher_inputs(task.without_answers(), context)
                for g in ti.images()}
        demo_grids = {g.tobytes() + bytes(g.shape) for p in task.train for g in (p.input, p.output)}
        assert not (answers - demo_grids) & seen  # an answer can only appear if it is also a demo grid


def test_demo_query_never_sees_its_own_output() -> None:
    task = TASKS[1].without_answers()
    for ti, place in teacher_inputs(task, context="demos", max_context=10):
        if place.startswith("train"):
            i = int(place.split()[1])
            own = task.train[i]
            assert not any(np.array_equal(inp, own.input) and np.array_equal(out, own.output)
                           for inp, out in ti.context)
            assert len(ti.context) == len(task.train) - 1
        else:
            assert len(ti.context) == len(task.train)


def test_inputs_carry_no_task_id() -> None:
    """A teacher sees the same inputs, under the same keys, whatever the task is called."""
    assert {f.name for f in dataclasses.fields(TeacherInput)} == {"context", "query"}  # grids only
    for task in TASKS:
        plain = task.without_answers()
        renamed = Task("zz" + task.id[::-1], plain.train, plain.test_inputs)
        a, b = teacher_inputs(plain, "demos"), teacher_inputs(renamed, "demos")
        assert [(ti.key, place) for ti, place in a] == [(ti.key, place) for ti, place in b]
        for (x, _), (y, _) in zip(a, b, strict=True):
            assert all(np.array_equal(g, h) for g, h in zip(x.images(), y.images(), strict=True))


def test_keys_depend_on_what_the_teacher_sees_only() -> None:
    g = np.arange(6, dtype=np.uint8).reshape(2, 3) % 10
    assert query_key(g) == query_key(g.copy())
    assert query_key(g) != query_key(g.T.copy())  # same cells, other shape
    assert query_key(g) != query_key(g, ((g, g),))  # context is part of the key
    rows, inputs = plan(TASKS, "none")
    assert len({r["key"] for r in rows}) == len(rows) == len(inputs)
    assert rows == plan(list(reversed(TASKS)), "none")[0]  # order does not depend on the caller's order


def test_render_draws_the_canvas_cell_for_cell() -> None:
    canvas = torch.full((1, 30, 30), 10)
    canvas[0, :2, :3] = torch.tensor([[1, 2, 3], [4, 5, 6]])
    img = render_canvases(canvas, size=224, mean=0.0, std=1.0)
    assert img.shape == (1, 3, 224, 224)
    assert torch.allclose(img[0, :, 0, 0], torch.tensor(PALETTE[1]))
    assert torch.allclose(img[0, :, 8, 16], torch.tensor(PALETTE[6]))  # pixel (8, 16) lies in cell (1, 2)
    assert torch.allclose(img[0, :, 223, 223], torch.ones(3))  # OUTSIDE is white


def test_pooling_shapes_and_values() -> None:
    tokens = torch.arange(16.0).view(1, 16, 1).expand(1, 16, 2)  # a 4x4 grid numbered row by row
    assert pool_tokens(tokens, (4, 4), "none").shape == (1, 16, 2)
    assert pool_tokens(tokens, (4, 4), "grid")[0, 0, 0] == 7.5
    two = pool_tokens(tokens, (4, 4), "2x2")[0, :, 0]
    assert two.tolist() == [2.5, 4.5, 10.5, 12.5]
    with pytest.raises(SageError, match="KxK"):
        pool_tokens(tokens, (4, 4), "2x3")


def test_canvases_keep_context_order() -> None:
    ti = teacher_inputs(TASKS[2].without_answers(), "demos")[-1][0]
    queries, context = canvases_of([ti])
    assert queries.shape == (1, 30, 30) and len(context[0]) == 2 * len(ti.context)
    assert torch.equal(context[0][1][: ti.context[0][1].shape[0], : ti.context[0][1].shape[1]],
                       torch.from_numpy(ti.context[0][1]).long())


def test_tokenizer_folder_is_read_locally(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from sage_distill.teachers.groot import load_qwen_tokenizer

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "user": 5, "grids": 7}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path)
    ids = load_qwen_tokenizer(str(tmp_path))
    assert ids("user grids zebra") == [5, 7, 0]
    with pytest.raises(SageError, match="cannot load a tokenizer"):
        load_qwen_tokenizer(str(tmp_path / "absent"))
