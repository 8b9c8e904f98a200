"""Training data: decontamination on the real sets, no evaluation answer in any batch, packing."""

from __future__ import annotations

import numpy as np
import pytest

from arc_world import small_task
from sage_distill.arc.task import fingerprint, grid_key
from sage_distill.errors import SageError
from sage_distill.student.configuration_sage import IGNORE
from sage_distill.training.data import PackedRows, StepBatches, assemble, build_pairs


def test_unseen_protocol_drops_arc1_evaluation_from_arc2_by_id_and_by_grid() -> None:
    table, report = assemble([("arc2", "training"), ("arc2", "evaluation")], [("arc1", "evaluation")], False)
    from sage_distill.arc.datasets import load_dataset

    arc2_training = {t.id for t in load_dataset("arc2", "training")}
    by_id = {t for t, why in report.dropped.items() if why.startswith("id")}
    assert len(by_id & arc2_training) == 376  # ARC-AGI-2 training holds 376 ARC-AGI-1 evaluation tasks

    evaluation = load_dataset("arc1", "evaluation")
    ids = {t.id for t in evaluation}
    keys = {grid_key(g) for t in evaluation for g in (*t.test_inputs, *t.test_outputs)}
    assert not ids & set(table.task_ids)
    assert not keys & {grid_key(g) for g in (*table.inputs, *table.outputs)}


def test_transductive_protocol_uses_evaluation_demonstrations_only() -> None:
    table, _ = assemble([("arc1", "training")], [("arc1", "evaluation")], True)
    from sage_distill.arc.datasets import load_dataset

    evaluation = {t.id: t for t in load_dataset("arc1", "evaluation")}
    demos = {(grid_key(p.input), grid_key(p.output)) for t in evaluation.values() for p in t.train}
    answers = {(grid_key(i), grid_key(o)) for t in evaluation.values()
               for i, o in zip(t.test_inputs, t.test_outputs, strict=True)}
    rows = {i for i, tid in enumerate(table.task_ids) if tid in evaluation}
    assert len(rows) == 400
    pairs = {(grid_key(i), grid_key(o)) for i, o, r in zip(table.inputs, table.outputs, table.task_index, strict=True)
             if r in rows}
    assert pairs <= demos and not pairs & (answers - demos)
    assert table.fingerprints[min(rows)] == fingerprint(evaluation[table.task_ids[min(rows)]].without_answers())


def test_rows_are_packed_reproducibly_with_each_pair_once_per_epoch() -> None:
    table = build_pairs([(small_task(i), True) for i in range(8)])
    packed = PackedRows(table, 96, seed=3)
    epoch = packed.plan(0)
    assert sorted(p for row in epoch for p, _, _ in row) == list(range(len(table)))
    again = PackedRows(table, 96, seed=3)
    for g in (0, 5, len(epoch) + 2):
        a, b = packed.row(g), again.row(g)
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(PackedRows(table, 96, seed=4).row(0)["tokens"], packed.row(0)["tokens"])
    batch = StepBatches(packed, rows=2, rank=1, world=2)[3]  # rows 14 and 15 of the run
    assert np.array_equal(batch["tokens"][0].numpy(), packed.row(14)["tokens"])


def test_labels_cover_exactly_the_output_tokens() -> None:
    table = build_pairs([(small_task(0), True)])
    row = PackedRows(table, 128, seed=0).row(0)
    for doc in np.unique(row["doc"][row["real"]]):
        at = np.where(row["doc"] == doc)[0]
        tokens, labels = row["tokens"][at], row["labels"][at]
        sep = int(np.where(tokens == 12)[0][0])
        assert labels[:sep].tolist() == [IGNORE] * sep and labels[-1] == IGNORE
        assert labels[sep:-1].tolist() == tokens[sep + 1:].tolist()  # predict every output token and <end>
    assert (row["labels"][~row["real"]] == IGNORE).all()


def test_a_row_too_short_for_a_pair_is_refused_with_the_task() -> None:
    table = build_pairs([(small_task(0, task_id="tiny-task"), True)])
    with pytest.raises(SageError, match="tiny-task"):
        PackedRows(table, 8, seed=0)


def test_palette_views_keep_the_colours_a_task_inputs_lack() -> None:
    from sage_distill.arc.task import Pair, Task

    rng = np.random.default_rng(0)

    def pair() -> Pair:  # the rule paints every 1 as 8: 8 never shows in an input
        g = rng.integers(0, 4, (3, 3)).astype(np.uint8)
        return Pair(g, np.where(g == 1, 8, g).astype(np.uint8))

    tasks = [Task(f"t{i}", (pair(), pair()), (pair().input,), None) for i in range(3)]
    table = build_pairs([(t, False) for t in tasks])
    assert all(8 not in p for p in table.palettes)
    packed, plain = PackedRows(table, 128, seed=0, palette_views=True), PackedRows(table, 128, seed=0)
    eights = 0
    for g in range(10):
        row = packed.row(g)
        colour = row["role"] >= 0
        for t, r, task in zip(row["tokens"][colour], row["role"][colour], row["task"][colour], strict=True):
            assert r in table.palettes[task] or t == r
        eights += int(((row["role"] == 8) & (row["tokens"] == 8)).sum())
    assert eights > 0  # the painted colour is always 8, so the model can know it
    plain_eights = sum(int(((plain.row(g)["role"] == 8) & (plain.row(g)["tokens"] != 8)).sum()) for g in range(10))
    assert plain_eights > 0  # the old views scramble it
