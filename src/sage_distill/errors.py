"""The project's own error types. Every bad input surfaces as one of these, never as a bare
KeyError or ValueError, so the CLI can print one clear line and exit 2."""

from __future__ import annotations


class SageError(Exception):
    """Base class for errors the user can act on."""


class ArcDataError(SageError):
    """A malformed ARC file, task or grid.

    The message always names the file, the task id, the place inside the task
    (train/test, pair index, input/output, row, column) and the problem.
    """

    def __init__(self, problem: str, *, file: str | None = None, task: str | None = None,
                 place: str | None = None) -> None:
        self.problem, self.file, self.task, self.place = problem, file, task, place
        parts = [f"file {file}" if file else None, f"task {task}" if task else None, place]
        where = ", ".join(p for p in parts if p)
        super().__init__(f"{where}: {problem}" if where else problem)


class PredictionError(SageError):
    """A malformed prediction file or entry."""
