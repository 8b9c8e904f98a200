"""The scorer against hand-computed cases. Figures are worked out in the comments."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pytest import approx

from sage_distill.errors import PredictionError
from sage_distill.evaluation.baselines import all_background, copy_input
from sage_distill.evaluation.scoring import evaluate_files, format_table, score_submission
from sage_distill.evaluation.submission import load_predictions, parse_predictions, write_predictions


def g(rows: list[list[int]]) -> np.ndarray:
    return np.array(rows, dtype=np.uint8)


SOLUTIONS = {
    "A": [g([[1, 2], [3, 0]]), g([[5]])],
    "B": [g([[0, 0], [0, 4]])],
    "C": [g([[7]])],
}
PREDICTIONS = {
    # A0: attempt_1 has 3 of 4 cells right (the 0 cell says 3); attempt_2 is exact. A1: attempt_1 exact.
    "A": [{"attempt_1": [[1, 2], [3, 3]], "attempt_2": [[1, 2], [3, 0]]}, {"attempt_1": [[5]]}],
    # B0: attempt_1 has the wrong shape; attempt_2 the right shape, one cell wrong.
    "B": [{"attempt_1": [[0, 0, 0]], "attempt_2": [[0, 0], [0, 0]]}],
    # C is missing.
}


def test_hand_computed_case() -> None:
    r = score_submission(parse_predictions(PREDICTIONS), SOLUTIONS)
    assert r["tasks"] == 3 and r["test_inputs"] == 4
    assert r["pass@2"] == approx((1 + 0 + 0) / 3)  # A: 2/2, B: 0/1, C: missing
    assert r["pass@1"] == approx((0.5 + 0 + 0) / 3)  # A: only A1 by attempt_1
    assert r["strict@2"] == approx(1 / 3)
    # attempt_1 on shape-matched grids: A0 3/4, A1 1/1 -> 4/5; B0 wrong shape, C missing.
    assert r["pixel_accuracy"] == approx(4 / 5) and r["pixel_cells"] == 5
    # true non-zero cells: A0 has 1,2,3 (all right), A1 has 5 (right) -> 4/4.
    assert r["foreground_accuracy"] == approx(1.0) and r["foreground_cells"] == 4
    assert r["shape_accuracy"] == approx(2 / 4)
    pc = r["per_color"]
    assert pc["0"] == {"accuracy": 0.0, "f1": 0.0, "support": 1}  # the one 0 cell was predicted 3
    assert pc["3"]["accuracy"] == 1.0 and pc["3"]["f1"] == approx(2 / 3)  # precision 1/2, recall 1
    assert pc["5"] == {"accuracy": 1.0, "f1": 1.0, "support": 1}
    assert pc["4"] == {"accuracy": None, "f1": None, "support": 0}  # B is shape-mismatched, so unseen
    assert r["missing"] == {"tasks": ["C"], "entries": []}
    assert r["per_task"] == {"A": 1.0, "B": 0.0, "C": 0.0}


def test_task_average_not_entry_average() -> None:
    # X has 3 inputs with 2 right, Y 1 input right: 3 of 4 inputs overall, but the official rule
    # averages per task: (2/3 + 1) / 2 = 5/6, not 3/4.
    sol = {"X": [g([[1]]), g([[2]]), g([[3]])], "Y": [g([[4]])]}
    pred = {"X": [{"attempt_1": [[1]]}, {"attempt_1": [[2]]}, {"attempt_1": [[9]]}], "Y": [{"attempt_1": [[4]]}]}
    r = score_submission(parse_predictions(pred), sol)
    assert r["pass@2"] == approx(5 / 6)
    assert r["strict@2"] == approx(1 / 2)


def test_missing_entries_score_zero_and_are_listed() -> None:
    sol = {"X": [g([[1]]), g([[2]])]}
    r = score_submission(parse_predictions({"X": [{"attempt_1": [[1]], "attempt_2": [[1]]}]}), sol)
    assert r["pass@2"] == approx(0.5) and r["missing"]["entries"] == ["X[1]"]
    assert r["shape_accuracy"] == approx(0.5)


def test_extra_tasks_ignored_and_listed() -> None:
    sol = {"X": [g([[1]])]}
    r = score_submission(parse_predictions({"X": [{"attempt_1": [[1]]}], "Z": [{"attempt_1": [[1]]}]}), sol)
    assert r["pass@2"] == 1.0 and r["tasks"] == 1 and r["extra_tasks"] == ["Z"]


def test_too_many_entries_is_an_error() -> None:
    with pytest.raises(PredictionError, match="task X: 2 prediction entries for 1 test inputs"):
        score_submission(parse_predictions({"X": [{"attempt_1": [[1]]}, {"attempt_1": [[1]]}]}), {"X": [g([[1]])]})


@pytest.mark.parametrize(("entry", "words"), [
    ({"attempt_1": [[1, 2], [3]]}, "task T, entry 1, attempt_1, row 1: ragged"),
    ({"attempt_1": [[1, 2]], "attempt_2": [[1, 10]]}, "task T, entry 1, attempt_2, row 0, column 1"),
    ({"attempt_1": [[1.5]]}, "task T, entry 1, attempt_1, row 0, column 0"),
    ({"attempt_1": []}, "task T, entry 1, attempt_1: grid is empty"),
    ({"attempt_2": [[1]]}, "task T, entry 1: missing attempt_1"),
    ({"attempt_1": [[1]], "attempt_3": [[2]]}, "task T, entry 1: unknown keys ['attempt_3']"),
    ([[1]], "task T, entry 1: must be an object"),
])
def test_malformed_prediction_names_task_and_entry(entry: object, words: str) -> None:
    with pytest.raises(PredictionError) as info:
        parse_predictions({"T": [{"attempt_1": [[0]]}, entry]})
    assert words in str(info.value)


def test_prediction_file_errors(tmp_path) -> None:
    bad = tmp_path / "p.json"
    bad.write_text("{oops")
    with pytest.raises(PredictionError, match="not valid JSON"):
        load_predictions(bad)
    bad.write_text("[]")
    with pytest.raises(PredictionError, match="top level must be an object"):
        load_predictions(bad)


def test_write_load_roundtrip(tmp_path) -> None:
    path = tmp_path / "sub" / "p.json"
    write_predictions(path, {"A": [{"attempt_1": g([[1, 2]]), "attempt_2": [[3]]}]})
    assert json.loads(path.read_text()) == {"A": [{"attempt_1": [[1, 2]], "attempt_2": [[3]]}]}
    loaded = load_predictions(path)
    assert loaded["A"][0]["attempt_1"].tolist() == [[1, 2]]
    with pytest.raises(PredictionError):
        write_predictions(tmp_path / "q.json", {"A": [{"attempt_1": [[11]]}]})
    assert not (tmp_path / "q.json").exists()


def test_baselines_and_evaluate_files(tmp_path) -> None:
    # Task I: identity (copy right). Task Z: output all zeros at the input's shape (background right).
    # Task S: output a different shape (both wrong).
    challenges = {
        "I": {"train": [{"input": [[1, 2]], "output": [[1, 2]]}], "test": [{"input": [[3, 4]]}]},
        "Z": {"train": [{"input": [[1]], "output": [[0]]}], "test": [{"input": [[5, 0], [0, 5]]}]},
        "S": {"train": [{"input": [[1]], "output": [[1, 1]]}], "test": [{"input": [[2]]}]},
    }
    solutions = {"I": [[[3, 4]]], "Z": [[[0, 0], [0, 0]]], "S": [[[2, 2]]]}
    ch, sol, pred = tmp_path / "c.json", tmp_path / "s.json", tmp_path / "p.json"
    ch.write_text(json.dumps(challenges))
    sol.write_text(json.dumps(solutions))
    write_predictions(pred, {"S": [{"attempt_1": [[1, 1]], "attempt_2": [[2, 2]]}]})
    r = evaluate_files(pred, sol, ch)
    assert r["pass@2"] == approx(1 / 3) and r["pass@1"] == 0.0 and r["missing"]["tasks"] == ["I", "Z"]
    copy, bg = r["baselines"]["copy"], r["baselines"]["background"]
    assert copy["pass@2"] == approx(1 / 3) and bg["pass@2"] == approx(1 / 3)
    # copy on Z: cells 5,0,0,5 vs 0,0,0,0 -> 2/4; on I 2/2 -> 4/6 pixels; S shape wrong.
    assert copy["pixel_accuracy"] == approx(4 / 6) and copy["shape_accuracy"] == approx(2 / 3)
    # background on I: 0/2, on Z: 4/4 -> 4/6; foreground: I has 2 non-zero cells, both wrong.
    assert bg["pixel_accuracy"] == approx(4 / 6) and bg["foreground_accuracy"] == 0.0
    table = format_table(r, name="model")
    assert "copy" in table and "background" in table and "MISSING" in table and "33.33%" in table
    assert format_table(r, name="copy").splitlines()[0].split()[1:] == ["copy", "(model)", "copy", "background"]


def test_baselines_predict_from_inputs_only() -> None:
    from sage_distill.arc.validate import parse_task

    task = parse_task({"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3, 4]]}, {"input": [[5]]}]},
                      "t", file=None)
    assert [e["attempt_1"].tolist() for e in copy_input([task])["t"]] == [[[3, 4]], [[5]]]
    assert [e["attempt_2"].tolist() for e in all_background([task])["t"]] == [[[0, 0]], [[0]]]


def test_misses_right_up_to_a_recolouring_are_counted() -> None:
    from sage_distill.evaluation.scoring import recoloured, score_submission

    truth = np.array([[1, 2], [2, 0]], dtype=np.uint8)
    assert recoloured(np.array([[3, 2], [2, 0]]), truth)  # 1 -> 3, a bijection
    assert not recoloured(truth.copy(), truth)  # right is not a recolouring miss
    assert not recoloured(np.array([[2, 2], [2, 0]]), truth)  # two colours merged: not one-to-one
    assert not recoloured(np.array([[1, 2, 0]]), truth)  # another shape
    sols = {"a": [truth], "b": [truth], "c": [truth]}
    preds = {"a": [{"attempt_1": np.array([[5, 2], [2, 0]]), "attempt_2": np.zeros((1, 1), np.uint8)}],
             "b": [{"attempt_1": np.array([[5, 2], [2, 0]]), "attempt_2": truth}],  # solved: not counted
             "c": [{"attempt_1": np.array([[5, 5], [2, 0]]), "attempt_2": None}]}
    assert score_submission(preds, sols)["right_up_to_recolouring"] == 1
