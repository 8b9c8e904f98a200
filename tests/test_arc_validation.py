"""Every malformation named in the spec raises ArcDataError naming file, task, place and problem,
through every loader."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest

from conftest import make_task
from sage_distill.arc.datasets import find_duplicate_ids, load_challenges, load_path, load_solutions, scan_path
from sage_distill.arc.validate import parse_grid, parse_task
from sage_distill.errors import ArcDataError


def _set(path: tuple, value: object) -> Callable[[dict], dict]:
    def mutate(task: dict) -> dict:
        task = copy.deepcopy(task)
        target = task
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return task
    return mutate


def _drop(path: tuple) -> Callable[[dict], dict]:
    def mutate(task: dict) -> dict:
        task = copy.deepcopy(task)
        target = task
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return task
    return mutate


# (mutation, expected place or None, expected words in the problem)
CASES = {
    "missing train": (_drop(("train",)), None, "missing 'train'"),
    "missing test": (_drop(("test",)), None, "missing 'test'"),
    "empty train": (_set(("train",), []), None, "'train' is empty"),
    "empty test": (_set(("test",), []), None, "'test' is empty"),
    "train not a list": (_set(("train",), {"a": 1}), None, "must be a list"),
    "train pair without input": (_drop(("train", 1, "input")), "train pair 1", "missing 'input'"),
    "demonstration without output": (_drop(("train", 0, "output")), "train pair 0", "missing 'output'"),
    "test pair without input": (_drop(("test", 0, "input")), "test pair 0", "missing 'input'"),
    "pair not an object": (_set(("train", 1), [[1]]), "train pair 1", "must be an object"),
    "empty grid": (_set(("train", 0, "input"), []), "train pair 0, input", "grid is empty"),
    "empty row": (_set(("train", 0, "input"), [[]]), "train pair 0, input, row 0", "row is empty"),
    "grid not a list": (_set(("train", 0, "input"), 5), "train pair 0, input", "must be a list of rows"),
    "row not a list": (_set(("train", 0, "input"), [[1], 2]), "train pair 0, input, row 1", "not a list"),
    "ragged": (_set(("train", 1, "output"), [[1, 2], [1]]), "train pair 1, output, row 1", "ragged"),
    "too many rows": (_set(("test", 0, "input"), [[0]] * 31), "test pair 0, input", "31 rows"),
    "too many columns": (_set(("test", 0, "output"), [[0] * 31]), "test pair 0, output, row 0", "31 columns"),
    "float cell": (_set(("train", 0, "input", 1, 2), 1.0), "train pair 0, input, row 1, column 2", "float"),
    "string cell": (_set(("train", 0, "input", 0, 1), "3"), "train pair 0, input, row 0, column 1", "str"),
    "bool cell": (_set(("train", 0, "output", 1, 0), True), "train pair 0, output, row 1, column 0", "bool"),
    "null cell": (_set(("train", 0, "output", 0, 0), None), "train pair 0, output, row 0, column 0", "NoneType"),
    "negative cell": (_set(("test", 0, "input", 1, 1), -1), "test pair 0, input, row 1, column 1", "outside 0-9"),
    "cell 10": (_set(("test", 0, "input", 0, 2), 10), "test pair 0, input, row 0, column 2", "outside 0-9"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_single_task_file_names_file_task_place_problem(case: str, write_json) -> None:
    mutate, place, problem = CASES[case]
    path = write_json("abc123.json", mutate(make_task()))
    with pytest.raises(ArcDataError) as info:
        load_path(path)
    e = info.value
    assert (e.file, e.task) == (str(path), "abc123")
    assert e.place == place
    assert problem in e.problem
    msg = str(e)
    assert str(path) in msg and "abc123" in msg and problem in msg and (place is None or place in msg)


@pytest.mark.parametrize("case", ["ragged", "cell 10", "missing train", "demonstration without output"])
def test_every_loader_applies_the_same_validation(case: str, write_json, tmp_path) -> None:
    mutate, place, problem = CASES[case]
    bad = mutate(make_task())
    challenges = write_json("challenges.json", {"good01": make_task(), "bad002": bad})
    write_json("dir/good01.json", make_task())
    write_json("dir/bad002.json", bad)
    for load in (lambda: load_path(challenges), lambda: load_challenges(challenges),
                 lambda: load_path(tmp_path / "dir")):
        with pytest.raises(ArcDataError) as info:
            load()
        assert info.value.task == "bad002" and info.value.place == place and problem in info.value.problem


def test_not_json(write_json) -> None:
    path = write_json("t.json", '{"train": [}')
    with pytest.raises(ArcDataError, match="not valid JSON") as info:
        load_path(path)
    assert info.value.file == str(path)


def test_not_utf8(tmp_path) -> None:
    path = tmp_path / "t.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ArcDataError, match="cannot read|not valid JSON"):
        load_path(path)


@pytest.mark.parametrize("top", [[1, 2], "text", 3, None])
def test_top_level_not_an_object(top: object, write_json) -> None:
    path = write_json("t.json", top if not isinstance(top, str) else '"text"')
    with pytest.raises(ArcDataError, match="top level must be") as info:
        load_path(path)
    assert info.value.file == str(path)
    with pytest.raises(ArcDataError, match="top level must be"):
        load_challenges(path)


def test_task_not_an_object_in_challenges(write_json) -> None:
    path = write_json("c.json", {"t1": [1, 2]})
    with pytest.raises(ArcDataError, match="task must be a JSON object") as info:
        load_path(path)
    assert info.value.task == "t1"


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ArcDataError, match="file not found"):
        load_path(tmp_path / "nope.json")


def test_duplicate_ids_across_files(write_json) -> None:
    a = write_json("a.json", {"t1": make_task(), "t2": make_task()})
    b = write_json("b.json", {"t3": make_task(), "t2": make_task()})
    problems = find_duplicate_ids([(str(a), load_path(a)), (str(b), load_path(b))])
    assert len(problems) == 1 and "duplicate task id" in str(problems[0])
    assert problems[0].task == "t2" and problems[0].file == str(b) and str(a) in str(problems[0])


def test_scan_reports_every_bad_task(write_json) -> None:
    bad1, bad2 = CASES["ragged"][0](make_task()), CASES["cell 10"][0](make_task())
    path = write_json("c.json", {"a": bad1, "b": make_task(), "c": bad2})
    tasks, problems = scan_path(path)
    assert [t.id for t in tasks] == ["b"]
    assert [p.task for p in problems] == ["a", "c"]


def test_valid_task_parses_to_exact_grids() -> None:
    task = parse_task(make_task(n_train=3, n_test=2), "ok", file=None)
    assert len(task.train) == 3 and len(task.test_inputs) == 2 and task.test_outputs is not None
    assert task.train[0].output.tolist() == [[2, 1, 0], [0, 2, 1]]
    assert task.train[0].input.dtype == np.uint8
    assert parse_grid([[9] * 30] * 30, file=None, task=None, place="x").shape == (30, 30)


def test_partial_test_outputs_refused() -> None:
    obj = make_task(n_test=2)
    del obj["test"][1]["output"]
    with pytest.raises(ArcDataError, match="all or none"):
        parse_task(obj, "t", file="f")


def test_challenges_never_carry_test_outputs(write_json) -> None:
    path = write_json("c.json", {"t1": make_task()})  # outputs present in the file: must be dropped
    assert load_challenges(path)[0].test_outputs is None


def test_solutions_validated_and_matched(write_json) -> None:
    ch = write_json("c.json", {"t1": make_task(n_test=2)})
    sol = write_json("s.json", {"t1": [[[1]], [[2, 3]]]})
    task = load_challenges(ch, sol)[0]
    assert [g.tolist() for g in task.test_outputs] == [[[1]], [[2, 3]]]
    with pytest.raises(ArcDataError, match="1 solutions for 2 test inputs"):
        load_challenges(ch, write_json("s2.json", {"t1": [[[1]]]}))
    with pytest.raises(ArcDataError, match="test 1, output, row 0, column 0") as info:
        load_solutions(write_json("s3.json", {"t1": [[[1]], [[11]]]}))
    assert info.value.task == "t1"
