"""Scoring that cannot lie: the ARC Prize submission format, the official score, diagnostics and
the baselines every table shows."""

from .baselines import BASELINES, all_background, copy_input
from .scoring import score_submission
from .submission import load_predictions, parse_predictions, write_predictions

__all__ = ["BASELINES", "all_background", "copy_input", "score_submission", "load_predictions",
           "parse_predictions", "write_predictions"]
