"""The feature store: safetensors shards of teacher features plus a manifest.

    DIR/manifest.json           spec (teacher, layer, pooling, dtype, shapes), rows (key, task, place),
                                shards (file, first row, count, sha256), complete
    DIR/shard-00000.safetensors "features" [n, L, D] (+ "logits" where a teacher gives them)
    DIR/stats.safetensors       per-dimension "mean", "std" [D] over every stored token (float32)

Rows are planned up front in a fixed order and cut into fixed shards, and each shard is computed in
the same batches whatever happened before, so a resumed run rewrites exactly the bytes an
uninterrupted one would. Every file is written atomically; the manifest lists a shard only after
the shard is on disk, and a listed shard is trusted only if its checksum still matches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ..errors import ArcDataError, check_task_id
from ..utils.io import atomic_save_safetensors, atomic_write_json, read_json
from .base import TeacherError

FORMAT = "sage-feature-store/1"
Compute = Callable[[int, int], dict[str, torch.Tensor]]  # (first row, count) -> tensors for those rows


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError:
        raise TeacherError("file missing", file=path) from None
    except OSError as e:
        raise TeacherError(f"cannot read: {e.strerror or e}", file=path) from None
    return h.hexdigest()


def open_safetensors(path: Path) -> Any:
    """safe_open, with a missing, truncated or corrupt file as a TeacherError naming the file."""
    try:
        return safe_open(path, "pt")
    except FileNotFoundError:
        raise TeacherError("file missing", file=path) from None
    except (SafetensorError, OSError, ValueError) as e:
        raise TeacherError(f"not a readable safetensors file (truncated or corrupt?): {e}", file=path) from None


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """load_file, with a missing, truncated or corrupt file as a TeacherError naming the file."""
    try:
        return load_file(path)
    except FileNotFoundError:
        raise TeacherError("file missing", file=path) from None
    except (SafetensorError, OSError, ValueError) as e:
        raise TeacherError(f"not a readable safetensors file (truncated or corrupt?): {e}", file=path) from None


# ---------------------------------------------------------------- the manifest, validated

STORE_DTYPES = ("bfloat16", "float16", "float32")


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(pattern=r"^[0-9a-f]{1,64}$")
    task: str
    place: str = Field(max_length=200)

    @field_validator("task")
    @classmethod
    def _task_id(cls, v: str) -> str:
        return _valid_task_id(v)


class _Shard(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int = Field(ge=0)
    file: str = Field(min_length=1)
    start: int = Field(ge=0)
    count: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    shapes: dict[str, list[int]]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="allow")  # teacher-specific keys (weights, dataset, ...) pass through
    teacher: str
    dtype: str
    shard_size: int = Field(ge=1)
    feature_dim: int = Field(ge=1)
    tasks: list[str] = Field(default_factory=list)

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        if v not in STORE_DTYPES:
            raise ValueError(f"must be one of {', '.join(STORE_DTYPES)}")
        return v

    @field_validator("tasks")
    @classmethod
    def _task_ids(cls, v: list[str]) -> list[str]:
        return [_valid_task_id(t) for t in v]


class _Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str
    spec: _Spec
    rows: list[_Row]
    shards: list[_Shard]
    complete: bool
    stats_sha256: str | None = None


def _valid_task_id(v: str) -> str:
    try:
        return check_task_id(v)
    except ArcDataError as e:
        raise ValueError(e.problem) from None


def inside(folder: Path, name: str, listed_in: str = "manifest.json") -> Path:
    """`folder / name`, refused unless it resolves inside `folder` (no '..', no absolute path)."""
    base = folder.resolve()
    target = (folder / name).resolve()
    if target == base or base not in target.parents:
        raise TeacherError(f"path {name!r} resolves outside {folder}: refused", file=folder / listed_in)
    return target


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.safetensors"


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest, checked field by field: task ids, shard paths inside the store, consistent rows."""
    path = folder / "manifest.json"
    if not folder.is_dir():
        raise TeacherError("not a directory: a feature store is a folder", file=folder)
    if not path.is_file():
        raise TeacherError("not a feature store (no manifest.json)", file=folder)
    manifest = read_json(path, TeacherError)
    if not isinstance(manifest, dict):
        raise TeacherError(f"must be a JSON object, got {type(manifest).__name__}", file=path)
    if manifest.get("format") != FORMAT:
        raise TeacherError(f"unknown store format {manifest.get('format')!r}, expected {FORMAT}", file=path)
    try:
        checked = _Manifest.model_validate(manifest)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise TeacherError(first["msg"], file=path, where=where) from None
    size = checked.spec.shard_size
    n_shards = -(-len(checked.rows) // size)
    seen: set[int] = set()
    for j, shard in enumerate(checked.shards):
        where = f"shards.{j}"
        inside(folder, shard.file)
        if shard.file != shard_name(shard.index):
            raise TeacherError(f"shard {shard.index} must be the file {shard_name(shard.index)}, not {shard.file!r}",
                               file=path, where=where)
        if "features" not in shard.shapes:
            raise TeacherError("shapes must list 'features'", file=path, where=where)
        if shard.index in seen or shard.index >= max(n_shards, 1):
            raise TeacherError(f"shard index {shard.index} is repeated or beyond the {n_shards} planned",
                               file=path, where=where)
        seen.add(shard.index)
        if shard.start != shard.index * size or shard.start + shard.count > len(checked.rows):
            raise TeacherError(f"rows {shard.start}..{shard.start + shard.count} do not match shard "
                               f"{shard.index} of size {size} over {len(checked.rows)} rows", file=path, where=where)
    return manifest


def write_store(folder: str | Path, spec: dict[str, Any], rows: list[dict[str, str]], compute: Compute,
                on_shard: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Create or resume a store. `spec` must hold shard_size and dtype; a resume with a different
    spec or row plan is refused (it would mix two teachers' features)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    size, dtype = int(spec["shard_size"]), getattr(torch, spec["dtype"])
    n_shards = -(-len(rows) // size)
    manifest = {"format": FORMAT, "spec": spec, "rows": rows, "shards": [], "complete": False}
    done: dict[int, dict] = {}
    if (folder / "manifest.json").exists():
        old = read_manifest(folder)
        if old["spec"] != spec or old["rows"] != rows:
            raise TeacherError(f"{folder} holds a store made with other settings or rows; use a new --out")
        for entry in old["shards"]:  # keep only shards whose bytes are still what was recorded
            path = inside(folder, entry["file"])
            if path.is_file() and sha256_file(path) == entry["sha256"]:
                done[entry["index"]] = entry
    for i in range(n_shards):
        if i in done:
            continue
        start = i * size
        count = min(size, len(rows) - start)
        out = compute(start, count)
        tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in out.items()}
        for k, v in tensors.items():
            if v.shape[0] != count:
                raise TeacherError(f"teacher returned {v.shape[0]} rows of '{k}' for {count} grids")
        path = folder / shard_name(i)
        atomic_save_safetensors(path, tensors)
        done[i] = {"index": i, "file": path.name, "start": start, "count": count, "sha256": sha256_file(path),
                   "shapes": {k: list(v.shape) for k, v in tensors.items()}}
        manifest["shards"] = [done[j] for j in sorted(done)]
        atomic_write_json(folder / "manifest.json", manifest, indent=1)
        if on_shard:
            on_shard(i)
    manifest["shards"] = [done[j] for j in sorted(done)]
    mean, std = feature_stats(folder, manifest["shards"])
    atomic_save_safetensors(folder / "stats.safetensors", {"mean": mean, "std": std})
    manifest["stats_sha256"] = sha256_file(folder / "stats.safetensors")
    manifest["complete"] = True
    atomic_write_json(folder / "manifest.json", manifest, indent=1)
    return manifest


def feature_stats(folder: Path, shards: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std over every row and token, accumulated in float64, shard by shard."""
    total, sq, n = None, None, 0
    for entry in shards:
        with open_safetensors(inside(folder, entry["file"])) as f:
            x = f.get_tensor("features").double().flatten(0, -2)
        total = x.sum(0) if total is None else total + x.sum(0)
        sq = (x * x).sum(0) if sq is None else sq + (x * x).sum(0)
        n += x.shape[0]
    if total is None:
        raise TeacherError(f"{folder}: no shards to compute statistics from")
    mean = total / n
    std = (sq / n - mean * mean).clamp(min=0).sqrt()
    return mean.float(), std.float()


class FeatureStore(torch.utils.data.Dataset):
    """Lazy, read-only view of a complete store: item i is {"features": [L, D], "logits"?: ...}.

    Shards are opened on first use in each process (handles are not pickled), so it works with
    DataLoader workers; only the requested rows are read."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        if not self.manifest.get("complete"):
            raise TeacherError(f"{self.folder}: incomplete store; rerun the same extract command to finish it")
        self.spec = self.manifest["spec"]
        self.keys = [r["key"] for r in self.manifest["rows"]]
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.shard_size = int(self.spec["shard_size"])
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}}

    def _shard(self, i: int) -> Any:
        if i not in self._handles:
            self._handles[i] = open_safetensors(self.folder / shard_name(i))
        return self._handles[i]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        f = self._shard(i // self.shard_size)
        j = i % self.shard_size
        return {k: f.get_slice(k)[j:j + 1][0] for k in f.keys()}

    def lookup(self, keys: list[str]) -> dict[str, torch.Tensor]:
        """Stacked rows for `keys`, with "mask" [B] false (and zeros) where a key is not stored."""
        found = [self.index.get(k) for k in keys]
        present = next((self[i] for i in found if i is not None), None)
        if present is None:
            raise TeacherError("none of the batch's grids is in the store")
        out = {name: torch.zeros(len(keys), *t.shape, dtype=torch.float32) for name, t in present.items()}
        for b, i in enumerate(found):
            if i is not None:
                for name, t in self[i].items():
                    out[name][b] = t.float()
        out["mask"] = torch.tensor([i is not None for i in found])
        return out

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        s = load_safetensors(self.folder / "stats.safetensors")
        if "mean" not in s or "std" not in s:
            raise TeacherError("must hold 'mean' and 'std'", file=self.folder / "stats.safetensors")
        return s["mean"], s["std"]
