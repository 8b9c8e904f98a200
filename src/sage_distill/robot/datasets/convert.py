"""Convert any readable LeRobot dataset to v3.0, and describe a dataset in a few lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...utils.io import atomic_write_json, read_json
from .base import BOOKKEEPING, TOL_S, DatasetError
from .reader import LeRobotDataset, open_dataset
from .writer import LeRobotWriter

MARKER = Path("meta") / "sage_convert.json"  # {"source", "finished", ...}: which conversion a folder holds


def convert(src: str | Path, out: str | Path, *, fix: bool = True) -> LeRobotDataset:
    """`src` (v2.0 / v2.1 / v3.0) as a LeRobot v3.0 dataset in `out`, video re-encoded; returns it opened.
    A finished conversion of the same source is returned as is, an interrupted one is continued; any other
    non-empty `out` is refused."""
    ds = open_dataset(src, fix=fix)
    out, source = Path(out), str(Path(src).resolve())
    if out.exists() and not out.is_dir():
        raise DatasetError("exists and is not a directory", file=out)
    if out.is_dir() and any(out.iterdir()):
        mark = read_json(out / MARKER, DatasetError) if (out / MARKER).is_file() else None
        if not isinstance(mark, dict) or mark.get("source") != source:
            raise DatasetError(f"exists, is not empty and is not a conversion of {source}; give a new folder",
                               file=out)
        if mark.get("finished"):
            return open_dataset(out)
    fps = round(ds.fps)
    if abs(ds.fps - fps) > 1e-6:
        raise DatasetError(f"{ds.fps} is not a whole number of frames per second; v3.0 output needs one",
                           file=ds.root / "meta" / "info.json", where="fps")
    mark = {"source": source, "source_version": ds.version, "fixes": ds.fixes, "finished": False}
    atomic_write_json(out / MARKER, mark, indent=1)
    features = {k: f for k, f in ds.features.items() if k not in BOOKKEEPING}
    writer = LeRobotWriter(out, fps=fps, robot_type=ds.robot_type or "unknown", features=features, tasks=ds.tasks)
    for e in ds.episodes[len(writer.done()):]:
        frames = ds.frames(e.index, raw=True)
        # The writer stamps frame i at i / fps; a source with dropped or uneven frames would be silently re-timed.
        uneven = np.nonzero(np.abs(frames["timestamp"] - frames["timestamp"][0] - np.arange(e.length) / fps) > TOL_S)[0]
        if len(uneven):
            raise DatasetError(f"episode {e.index} row {uneven[0]} is not at frame {uneven[0]} / {fps} fps",
                               file=ds.root, where="timestamp")
        keep = {k: frames[k] for k in features}
        if "task_index" in frames:
            keep["task_index"] = frames["task_index"]
        writer.add_episode(keep, e.tasks, extra=e.extra)
    writer.close()
    atomic_write_json(out / MARKER, mark | {"finished": True}, indent=1)
    return open_dataset(out)


def _ranges(idx: np.ndarray) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
    parts, start = [], None
    for i, v in enumerate(idx):
        if start is None:
            start = v
        if i + 1 == len(idx) or idx[i + 1] != v + 1:
            parts.append(f"{start}" if start == v else f"{start}-{v}")
            start = None
    return ", ".join(parts)


def describe(ds: LeRobotDataset) -> str:
    """What `robot show` prints: version, fps, robot, episodes, frames, tasks, features (shape, which dims
    vary over the dataset), and the fixes applied when it was opened."""
    lengths = [e.length for e in ds.episodes]
    lines = [f"LeRobot {ds.version} dataset: {ds.root}",
             f"  fps {ds.fps:g}, robot type {ds.robot_type or '-'}",
             f"  {len(ds.episodes)} episodes, {ds.num_frames} frames"
             + (f" ({min(lengths)}..{max(lengths)} per episode)" if lengths else "") + f", {len(ds.tasks)} tasks"]
    lines += [f"    task {i}: {t}" for i, t in enumerate(ds.tasks[:10])]
    if len(ds.tasks) > 10:
        lines.append(f"    ... {len(ds.tasks) - 10} more")
    lines.append("features:")
    width = max(map(len, ds.features), default=0)
    for k, f in ds.features.items():
        line = f"  {k:<{width}}  {f['dtype']:<8} {f['shape']}"
        if f["dtype"] not in ("video", "string"):
            vary = np.nonzero(ds.varying(k))[0]
            size = int(np.prod(f["shape"]))
            if size == 1:
                line += "  varies" if len(vary) else "  constant"
            else:
                line += f"  {len(vary)}/{size} dims vary" + (f": {_ranges(vary)}" if 0 < len(vary) < size else "")
        lines.append(line)
    lines.append(f"fixes applied ({len(ds.fixes)}):" if ds.fixes else "fixes applied: none")
    lines += [f"  - {x}" for x in ds.fixes]
    return "\n".join(lines)
