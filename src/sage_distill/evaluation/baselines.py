"""Trivial predictors that every score table shows beside the model. A model that does not beat
copy-the-input and all-background has learned nothing about the tasks, whatever its number says."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..arc.task import Task
from .submission import Submission

Predictor = Callable[[list[Task]], Submission]


def _predict(tasks: list[Task], fn: Callable[[np.ndarray], np.ndarray]) -> Submission:
    # Both attempts are the same guess: a baseline has no second idea.
    return {t.id: [{"attempt_1": fn(g), "attempt_2": fn(g)} for g in t.test_inputs] for t in tasks}


def copy_input(tasks: list[Task]) -> Submission:
    return _predict(tasks, lambda g: g.copy())


def all_background(tasks: list[Task]) -> Submission:
    return _predict(tasks, np.zeros_like)


BASELINES: dict[str, Predictor] = {"copy": copy_input, "background": all_background}
