"""Load a SAGE model folder for the commands that only read one (run, extract with a SAGE teacher):
a missing, truncated or corrupt folder becomes one ConfigError that names it, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, SageError


def load_sage_model(folder: str | Path, device: str, option: str = "--model") -> tuple[Any, Any]:
    from safetensors import SafetensorError

    from ..student.checkpoint import load_model

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder: give a SAGE model folder", file=option)
    try:
        return load_model(folder, device)
    except SageError:
        raise
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as e:
        msg = " ".join(str(e).split())[:200]
        raise ConfigError(f"cannot load the model (truncated or corrupt file?): {msg}", file=folder) from None
