"""Pieces shared by the LeRobot reader and writer: the error type, the episode record, and the
parquet <-> numpy conversion that checks every column against the shape info.json declares."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ...errors import SageError

# Columns every LeRobot frame row carries besides the features; the writer fills them in.
BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
BOOKKEEPING_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
# Two timestamps closer than this are the same frame. Parquet timestamps are often float32, whose
# rounding reaches ~1e-4 s after an hour; a frame period is >= 1/60 s, so 1 ms is still unambiguous.
TOL_S = 1e-3
CHUNKS_SIZE = 1000


class DatasetError(SageError):
    """A malformed LeRobot dataset: the message names the file and the field at fault."""


@dataclass
class Episode:
    index: int
    length: int
    tasks: list[str]
    extra: dict = field(default_factory=dict)  # writer-given metadata, e.g. {"task_name": "push-v3", "seed": 3}


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise DatasetError("file is missing", file=path)
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"not valid JSON ({e})", file=path, where=f"line {n}") from None
            if not isinstance(row, dict):
                raise DatasetError("expected a JSON object", file=path, where=f"line {n}")
            rows.append(row)
    return rows


def read_parquet(path: Path, what: str = "data") -> pa.Table:
    if not path.is_file():
        raise DatasetError(f"{what} file is missing", file=path)
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise DatasetError(f"parquet cannot be read, truncated or corrupt ({e})", file=path, where="footer") from None


def column_to_numpy(table: pa.Table, key: str, feature: dict, file: Path) -> np.ndarray:
    """Column `key` as a (rows, *shape) array; shape [1] columns may be stored as scalars (LeRobot does).
    Raises a DatasetError naming the column when it is missing, null, or not of the declared shape."""
    if key not in table.column_names:
        raise DatasetError("declared in meta/info.json but missing from the parquet", file=file, where=key)
    arr = table.column(key).combine_chunks()
    dims: list[int] = []
    while pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        if arr.null_count:
            raise DatasetError("has null rows", file=file, where=key)
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        n = int(lengths[0]) if len(lengths) else 0
        bad = np.nonzero(lengths != n)[0]
        if len(bad):
            r = int(bad[0])
            raise DatasetError(f"rows differ in length: row 0 has {n} values, row {r} has {lengths[r]}",
                               file=file, where=key)
        dims.append(n)
        arr = arr.flatten()
    if arr.null_count:
        raise DatasetError("has null values", file=file, where=key)
    shape = [int(d) for d in feature.get("shape", [1])]
    if dims != shape and not (dims == [] and shape == [1]):
        got = f"{dims}" if dims else "scalars"
        raise DatasetError(f"rows hold {got}, meta/info.json declares shape {shape}", file=file, where=key)
    values = arr.to_numpy(zero_copy_only=False)
    return values.reshape(table.num_rows, *shape)


def numpy_to_column(values: np.ndarray, dtype: str) -> pa.Array:
    """A (rows, *shape) array as a parquet column: scalars for shape [1], nested fixed-size lists otherwise
    (what Hugging Face `datasets` writes for Sequence(length=n))."""
    flat = pa.array(np.ascontiguousarray(values).reshape(-1).astype(dtype, copy=False))
    shape = values.shape[1:]
    if shape == (1,):
        return flat
    for n in reversed(shape):
        flat = pa.FixedSizeListArray.from_arrays(flat, int(n))
    return flat


def table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()
