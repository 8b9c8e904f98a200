"""The project's own error types. Every bad input surfaces as one of these, never as a bare
KeyError or ValueError, so the CLI can print one clear line and exit 2.

A SageError reads `<file>: <where>: <problem>` (the parts that are known): the file or option at
fault, the place inside it, and what is wrong. `cli.main` prints it as `error: ...` on one line."""

from __future__ import annotations

import os
import re
from pathlib import Path

# Task ids: letters, digits, '-' and '_', 1 to 64 characters. They become file names and keys.
TASK_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


class SageError(Exception):
    """Base class for errors the user can act on: `problem`, optionally with the `file` (or option)
    and the place `where` inside it."""

    def __init__(self, problem: str = "", *, file: str | Path | None = None, where: str | None = None) -> None:
        self.problem, self.file, self.where = problem, None if file is None else str(file), where
        super().__init__(": ".join(str(p) for p in (self.file, where, problem) if p))

    def one_line(self) -> str:
        """The message with every newline and run of spaces collapsed: the CLI prints one line."""
        return " ".join(str(self).split()) or type(self).__name__


class ArcDataError(SageError):
    """A malformed ARC file, task or grid.

    The message always names the file, the task id, the place inside the task
    (train/test, pair index, input/output, row, column) and the problem.
    """

    def __init__(self, problem: str, *, file: str | None = None, task: str | None = None,
                 place: str | None = None) -> None:
        self.task, self.place = task, place
        where = ", ".join(p for p in (f"task {task}" if task else None, place) if p)
        super().__init__(problem, file=file, where=where or None)


class PredictionError(SageError):
    """A malformed prediction file or entry."""


class ConfigError(SageError):
    """A config file or command-line option that cannot be used as given."""


def check_task_id(task_id: object, *, file: str | Path | None = None) -> str:
    """The id itself when it is a valid task id, else an ArcDataError that says why."""
    if not isinstance(task_id, str) or not TASK_ID_RE.fullmatch(task_id):
        shown = repr(task_id)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        raise ArcDataError(f"task id {shown} is not allowed: use 1-64 letters, digits, '-' or '_'",
                           file=None if file is None else str(file))
    return task_id


def check_output_file(path: str | Path, option: str = "--out") -> Path:
    """An output file path that can be written: not an existing directory, parent not a file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is an existing directory; give a file name", file=option)
    _check_parent(path, option)
    return path


def check_output_dir(path: str | Path, option: str = "--out") -> Path:
    """An output directory path that can be created or reused: not an existing file, nor under one."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} is an existing file; give a directory", file=option)
    _check_parent(path, option)
    return path


def check_new_output_dir(path: str | Path, option: str = "--out") -> Path:
    """`check_output_dir` for commands that write a whole folder and never resume: it must be new or empty."""
    path = check_output_dir(path, option)
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(f"{path} exists and is not empty; give a new or empty folder", file=option)
    return path


def _check_parent(path: Path, option: str) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{parent} is a file, so {path} cannot be created", file=option)
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ConfigError(f"{parent} is not writable", file=option)
            return
