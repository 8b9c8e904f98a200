"""Fuzz the loaders: whatever the bytes, only ArcDataError may escape."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_task
from sage_distill.arc.datasets import load_challenges, load_path, load_solutions
from sage_distill.arc.validate import parse_task
from sage_distill.errors import ArcDataError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 12), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=4))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(["train", "test", "input", "output", "x"]) | st.text(max_size=3),
                    inner, max_size=4)), max_leaves=30)


def _load_all(path: Path) -> None:
    for load in (load_path, load_challenges, load_solutions):
        try:
            load(path)
        except ArcDataError:
            pass


def _write(data: bytes) -> Path:
    fd, name = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    path = Path(name)
    path.write_bytes(data)
    return path


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    path = _write(data)
    try:
        _load_all(path)
    finally:
        path.unlink()


@SETTINGS
@given(json_values)
def test_random_json(obj: object) -> None:
    path = _write(json.dumps(obj).encode())
    try:
        _load_all(path)
    finally:
        path.unlink()


def _mutations(draw: st.DrawFn) -> object:
    """A valid task with one value somewhere deep inside replaced by an arbitrary JSON value."""
    task: object = make_task(n_train=draw(st.integers(1, 3)), n_test=draw(st.integers(1, 2)))
    keys = []
    node = task
    while isinstance(node, dict | list) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node)) if isinstance(node, dict) else st.integers(0, len(node) - 1))
        keys.append(key)
        node = node[key]
    replacement = draw(json_values)
    if not keys:
        return replacement
    parent = task
    for k in keys[:-1]:
        parent = parent[k]
    if draw(st.booleans()) and isinstance(parent, dict):
        del parent[keys[-1]]
    else:
        parent[keys[-1]] = replacement
    return task


@SETTINGS
@given(st.composite(_mutations)())
def test_mutated_tasks(task: object) -> None:
    try:
        parsed = parse_task(task, "fuzz", file="mem")
    except ArcDataError as e:
        assert e.task == "fuzz" and "fuzz" in str(e)
        return
    # Anything accepted is a well-formed task.
    for g in parsed.all_grids():
        assert 1 <= g.shape[0] <= 30 and 1 <= g.shape[1] <= 30 and g.max() <= 9


def test_deep_nesting() -> None:
    path = _write(b"[" * 100_000 + b"]" * 100_000)
    try:
        _load_all(path)
    finally:
        path.unlink()
