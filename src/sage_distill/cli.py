"""The `sage-distill` command line. This module parses arguments and dispatches; it holds no logic.

Every SageError is printed as one line and exits with status 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .errors import SageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distil large models into SAGE, a small iterative-refinement student.")
data_app = typer.Typer(no_args_is_help=True, help="ARC datasets: list, stats, validate, export.")
app.add_typer(data_app, name="data")

Opt = typer.Option

# ---------------------------------------------------------------- data (foundation)


@data_app.command("list")
def data_list() -> None:
    """The shipped datasets with their split sizes."""
    from .arc import commands

    commands.list_datasets()


# ---------------------------------------------------------------- student: train / predict / eval


# ---------------------------------------------------------------- teachers: extract / features


# ---------------------------------------------------------------- IRP runtime: run / trace


def main() -> None:
    try:
        app()
    except SageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


_ = (Path, Annotated)  # used by commands added below each section
