"""`sage-distill features validate DIR`: is a feature store whole, sane and complete?

Any failure raises TeacherError (the CLI prints it and exits 2); success returns a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..arc.datasets import load_dataset
from .base import TeacherError
from .store import FeatureStore, inside, open_safetensors, read_manifest, sha256_file, shard_name


def _check_shards(folder: Path, manifest: dict[str, Any]) -> tuple[int, int]:
    """Every planned shard present, unaltered, of the recorded shapes and dtype, finite."""
    spec, rows = manifest["spec"], manifest["rows"]
    size = int(spec["shard_size"])
    n_shards = -(-len(rows) // size)
    listed = {e["index"]: e for e in manifest["shards"]}
    missing = [i for i in range(n_shards) if i not in listed]
    if missing or not manifest.get("complete"):
        raise TeacherError(f"{folder}: incomplete store: {len(listed)} of {n_shards} shards done "
                           f"(missing {', '.join(shard_name(i) for i in missing[:5]) or 'statistics'}); "
                           "rerun the same extract command to finish it")
    for i in range(n_shards):
        entry, path = listed[i], folder / shard_name(i)
        if not path.is_file():
            raise TeacherError(f"{path}: shard file missing")
        if sha256_file(path) != entry["sha256"]:
            raise TeacherError(f"{path}: checksum mismatch: the shard is corrupt or was altered")
        with open_safetensors(path) as f:
            for name in f.keys():
                t = f.get_tensor(name)
                if list(t.shape) != entry["shapes"].get(name) or t.shape[0] != entry["count"]:
                    raise TeacherError(f"{path}: '{name}' has shape {list(t.shape)}, manifest says "
                                       f"{entry['shapes'].get(name)}")
                if str(t.dtype).removeprefix("torch.") != spec["dtype"]:
                    raise TeacherError(f"{path}: '{name}' is {t.dtype}, manifest says {spec['dtype']}")
                bad = int((~torch.isfinite(t.float())).sum())
                if bad:
                    raise TeacherError(f"{path}: '{name}' holds {bad} NaN/Inf values")
                if name == "features" and t.shape[-1] != spec["feature_dim"]:
                    raise TeacherError(f"{path}: feature dim {t.shape[-1]}, teacher's is {spec['feature_dim']}")
    return n_shards, len(rows)


def _coverage(manifest: dict[str, Any]) -> dict[str, Any]:
    """Every grid the extract planned for its tasks is stored; and how much of the split that is."""
    from .extract import plan

    spec = manifest["spec"]
    tasks = load_dataset(spec["dataset"], spec["split"])
    chosen = [t for t in tasks if t.id in set(spec["tasks"])]
    context = spec.get("context", "none")
    if context not in ("none", "demos"):
        raise TeacherError(f"context must be none or demos, got {context!r}", file="manifest.json", where="spec")
    expected = {r["key"] for r in plan(chosen, context)[0]}
    stored = {r["key"] for r in manifest["rows"]}
    missing = expected - stored
    if missing:
        raise TeacherError(f"store misses {len(missing)} of the {len(expected)} grids of its tasks "
                           f"in {spec['dataset']}/{spec['split']} (e.g. key {sorted(missing)[0]})")
    return {"tasks": f"{len(chosen)} of {len(tasks)}", "grids": len(expected)}


def validate_store(folder: str | Path, check_coverage: bool = True) -> dict[str, Any]:
    folder = Path(folder)
    manifest = read_manifest(folder)
    if not manifest["rows"]:
        raise TeacherError("the store holds no rows", file=folder / "manifest.json", where="rows")
    n_shards, n_rows = _check_shards(folder, manifest)
    if sha256_file(folder / "stats.safetensors") != manifest.get("stats_sha256"):
        raise TeacherError(f"{folder / 'stats.safetensors'}: checksum mismatch")
    mean, std = FeatureStore(folder).stats()
    spec = manifest["spec"]
    summary = {"store": str(folder), "teacher": spec["teacher"], "layer": spec["layer"], "pooling": spec["pooling"],
               "dtype": spec["dtype"], "rows": n_rows, "shards": n_shards,
               "feature_shape": manifest["shards"][0]["shapes"]["features"][1:],
               "bytes": sum(inside(folder, e["file"]).stat().st_size for e in manifest["shards"]),
               "dims": {"mean_abs_mean": float(mean.abs().mean()), "min_std": float(std.min()),
                        "max_std": float(std.max()), "dead_dims": int((std < 1e-6).sum())}}
    if check_coverage and "dataset" in spec and "split" in spec:
        summary["coverage"] = _coverage(manifest)
    return summary
