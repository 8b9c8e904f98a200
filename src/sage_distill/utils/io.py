"""File helpers: the one JSON reader, the one safetensors header reader, and atomic writes (a temp file
beside the target, fsync, rename).

A kill at any moment leaves either the old file or the new one, never half of either."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import SageError


def read_json(path: str | Path, error: type[SageError] = SageError) -> Any:
    """The parsed JSON of a file; a missing, unreadable or malformed file raises `error` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error("file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"cannot read: {e}", file=str(path)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"not valid JSON: {e}", file=str(path)) from None
    except RecursionError:
        raise error("not valid JSON: nested too deeply", file=str(path)) from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; a written file should be readable like any other
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = None) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_save_safetensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """safetensors' save_file is not atomic; serialise to bytes and rename instead."""
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata))


# Bytes per element of every safetensors dtype: a header's shapes are checked against its byte ranges.
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def read_safetensors_header(path: str | Path) -> dict[str, dict]:
    """The tensors a safetensors file declares ({name: {"dtype", "shape", "data_offsets"}}), checked against
    the file's size without reading the data: every tensor's byte range must hold exactly its shape, so a
    model built from these shapes can never be larger than the file. A truncated or corrupt file is one
    SageError naming it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or n > min(size - 8, 100_000_000):
                raise SageError("not a safetensors file, or truncated (bad header length)", file=path)
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise SageError(f"unreadable safetensors header ({' '.join(str(exc).split())[:200]})", file=path) from None
    if not isinstance(header, dict):
        raise SageError("safetensors header is not an object", file=path)
    header.pop("__metadata__", None)
    end = 0
    for name, t in header.items():
        ok = (isinstance(t, dict) and t.get("dtype") in DTYPE_BYTES and isinstance(t.get("shape"), list)
              and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2
              and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in t["shape"])
              and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in t["data_offsets"]))
        if not ok:
            raise SageError("malformed tensor entry in the safetensors header", file=path, where=name)
        start, stop = t["data_offsets"]
        if stop - start != math.prod(t["shape"]) * DTYPE_BYTES[t["dtype"]]:
            raise SageError(f"shape {t['shape']} ({t['dtype']}) does not fit its {stop - start} bytes", file=path,
                            where=name)
        end = max(end, stop)
    if 8 + n + end != size:
        raise SageError(f"truncated or padded: the header says {8 + n + end} bytes, the file has {size}", file=path)
    return header


def files_sha256(paths: Iterable[str | Path]) -> str:
    """sha256 over the files' contents in the given order: what a resume compares to know it continues with
    the same model or policy."""
    h = hashlib.sha256()
    for path in paths:
        with Path(path).open("rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
