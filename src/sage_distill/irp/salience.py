"""SNARC salience: five dimensions in [0, 1], each computed from data.

- surprise: prediction error when the truth is known (1 - correct); before that, the answer's final
  energy squashed by a logistic (high energy = the plugin itself did not believe its answer);
- novelty: cosine distance to the nearest stored embedding, halved into [0, 1] (1 for an empty memory);
- arousal: uncertainty of the output (mean normalised cell entropy for ARC);
- reward: the outcome (1 correct, 0 wrong; 0 while unknown, so unknown never looks rewarding);
- conflict: disagreement between plugins' answers, or between augmented predictions of one plugin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

DIMENSIONS = ("surprise", "novelty", "arousal", "reward", "conflict")


@dataclass
class Snarc:
    surprise: float
    novelty: float
    arousal: float
    reward: float
    conflict: float

    def total(self, weights: dict[str, float] | None = None) -> float:
        w = weights or dict.fromkeys(DIMENSIONS, 1.0)
        return sum(w[d] * getattr(self, d) for d in DIMENSIONS) / max(sum(w.values()), 1e-9)

    def to_json(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in asdict(self).items()}


def novelty(similarities: Sequence[float] | None) -> float:
    """Cosine distance to the nearest stored embedding, mapped to [0, 1], from the cosine similarities of
    the nearest memories (memory retrieval's `neighbour_similarity`); 1 when there are none."""
    if not similarities:
        return 1.0
    return float(np.clip((1.0 - max(similarities)) / 2.0, 0.0, 1.0))


def surprise(energy: float, correct: bool | None = None) -> float:
    if correct is not None:
        return 0.0 if correct else 1.0
    return 1.0 / (1.0 + math.exp(-max(min(energy, 50.0), -50.0)))


def reward(correct: bool | None) -> float:
    return 0.0 if correct is None else float(correct)


def input_salience(novel: float, prior_surprise: float = 0.5) -> float:
    """Salience of an input before any plugin answers: novelty, tempered by how surprising similar
    past inputs were (mean of the two). Drives WAKE <-> FOCUS."""
    return 0.5 * novel + 0.5 * prior_surprise
