"""Where a LeRobot dataset keeps each episode's rows and videos: v2.0 / v2.1 (one parquet and one mp4
per episode, meta/*.jsonl) and v3.0 (many episodes per file, meta/episodes/*.parquet, meta/tasks.parquet)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .base import CHUNKS_SIZE, DatasetError, Episode, read_jsonl, read_parquet


@dataclass
class VideoRef:
    path: Path | None  # None: the episode metadata names no file (v3)
    named: bool = False  # the episode metadata names this file (v3); v2 paths only follow from a template
    from_s: float = 0.0  # where the episode starts inside the file (v3 files hold several episodes)
    to_s: float = math.inf
    pts: np.ndarray | None = None  # filled by the checks: the frame (pts, time-base units) of every row


@dataclass
class EpisodeFiles:
    data: Path
    rows: slice | None  # None: the whole file is this episode (v2)
    videos: dict[str, VideoRef] = field(default_factory=dict)
    shift_s: float = 0.0  # subtracted from the parquet timestamps (the timestamp fix)


def _template(info: dict, name: str, info_path: Path, **kw) -> str:
    """info.json's path template `name` filled in: a relative path that stays inside the dataset folder."""
    try:
        rel = info[name].format(**kw)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as e:
        raise DatasetError(f"template cannot be filled ({type(e).__name__}: {e})", file=info_path,
                           where=name) from None
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or ".." in parts or "\0" in rel:
        raise DatasetError(f"{rel!r} leaves the dataset folder; paths must stay inside it", file=info_path,
                           where=name)
    return rel


def _require_int(value: object, file: Path, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise DatasetError(f"expected an integer, got {value!r}", file=file, where=where)
    return int(value)


def _episode(row: dict, file: Path, where: str, known: set[str]) -> Episode:
    index = _require_int(row.get("episode_index"), file, f"{where}, episode_index")
    length = _require_int(row.get("length"), file, f"{where}, length")
    if index < 0 or length < 0:
        raise DatasetError(f"expected whole numbers >= 0, got {index} and {length}", file=file,
                           where=f"{where}, episode_index, length")
    tasks = row.get("tasks")
    if isinstance(tasks, np.ndarray):
        tasks = tasks.tolist()
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise DatasetError(f"expected a list of task strings, got {tasks!r}", file=file, where=f"{where}, tasks")
    extra = {k: v for k, v in row.items()
             if k not in known and not k.startswith(("stats/", "videos/", "data/", "meta/")) and v is not None}
    return Episode(index, length, tasks, extra)


def _task_list(indices: list, tasks: list, path: Path) -> list[str]:
    """Task strings in task_index order; the indices must run 0..n-1 (data columns point into this list)."""
    if sorted(indices) != list(range(len(indices))):
        raise DatasetError(f"indices must run 0..{len(indices) - 1}, got {sorted(indices)[:10]}", file=path,
                           where="task_index")
    if not all(isinstance(t, str) for t in tasks):
        raise DatasetError("task descriptions must be strings", file=path, where="task")
    return [t for _, t in sorted(zip(indices, tasks, strict=True))]


def load_v2(root: Path, info: dict, info_path: Path) -> tuple[list[Episode], list[str], list[EpisodeFiles], Path]:
    ep_path, task_path = root / "meta" / "episodes.jsonl", root / "meta" / "tasks.jsonl"
    rows = read_jsonl(ep_path)
    known = {"episode_index", "length", "tasks"}
    episodes = [_episode(r, ep_path, f"line {n}", known) for n, r in enumerate(rows, 1)]
    task_rows = read_jsonl(task_path)
    for n, r in enumerate(task_rows, 1):
        _require_int(r.get("task_index"), task_path, f"line {n}, task_index")
        if not isinstance(r.get("task"), str):
            raise DatasetError(f"expected a string, got {r.get('task')!r}", file=task_path, where=f"line {n}, task")
    tasks = _task_list([r["task_index"] for r in task_rows], [r["task"] for r in task_rows], task_path)
    size = int(info.get("chunks_size", CHUNKS_SIZE))
    files = []
    for e in episodes:
        chunk = e.index // size
        data = root / _template(info, "data_path", info_path, episode_chunk=chunk, episode_index=e.index)
        videos = {k: VideoRef(root / _template(info, "video_path", info_path, episode_chunk=chunk, video_key=k,
                                                episode_index=e.index))
                  for k, f in info["features"].items() if f.get("dtype") == "video"}
        files.append(EpisodeFiles(data, None, videos))
    return episodes, tasks, files, ep_path


def load_v3(root: Path, info: dict, info_path: Path) -> tuple[list[Episode], list[str], list[EpisodeFiles], Path]:
    ep_dir = root / "meta" / "episodes"
    ep_files = sorted(ep_dir.glob("chunk-*/file-*.parquet"))
    if not ep_files:
        raise DatasetError("no episode metadata files (chunk-XXX/file-YYY.parquet)", file=ep_dir)
    known = {"episode_index", "length", "tasks", "dataset_from_index", "dataset_to_index"}
    video_keys = [k for k, f in info["features"].items() if f.get("dtype") == "video"]
    episodes, files = [], []
    for path in ep_files:
        table = read_parquet(path, "episode metadata")
        for col in ("episode_index", "tasks", "length", "data/chunk_index", "data/file_index"):
            if col not in table.column_names:
                raise DatasetError("column is missing", file=path, where=col)
        for n, row in enumerate(table.to_pylist()):
            where = f"row {n}"
            episodes.append(_episode(row, path, where, known))
            chunk = _require_int(row["data/chunk_index"], path, f"{where}, data/chunk_index")
            file = _require_int(row["data/file_index"], path, f"{where}, data/file_index")
            data = root / _template(info, "data_path", info_path, chunk_index=chunk, file_index=file)
            videos = {}
            for k in video_keys:
                c, f = row.get(f"videos/{k}/chunk_index"), row.get(f"videos/{k}/file_index")
                if c is None or f is None:
                    videos[k] = VideoRef(None)
                    continue
                video = root / _template(info, "video_path", info_path, video_key=k, chunk_index=c, file_index=f)
                lo, hi = row.get(f"videos/{k}/from_timestamp"), row.get(f"videos/{k}/to_timestamp")
                if (not isinstance(lo, int | float) or not isinstance(hi, int | float)
                        or not math.isfinite(lo) or not math.isfinite(hi) or not 0 <= lo <= hi):
                    raise DatasetError(f"expected finite numbers 0 <= from <= to, got {lo!r} and {hi!r}", file=path,
                                       where=f"{where}, videos/{k}/from_timestamp, to_timestamp")
                videos[k] = VideoRef(video, named=True, from_s=float(lo), to_s=float(hi))
            files.append(EpisodeFiles(data, slice(0, 0), videos))  # rows are found in the data file by the checks
    task_path = root / "meta" / "tasks.parquet"
    table = read_parquet(task_path, "tasks")
    name = next((c for c in ("task", "__index_level_0__") if c in table.column_names), None)
    if name is None or "task_index" not in table.column_names:
        raise DatasetError("needs a task_index column and the task strings (column 'task' or the index)",
                           file=task_path, where="columns")
    tasks = _task_list(table.column("task_index").to_pylist(), table.column(name).to_pylist(), task_path)
    return episodes, tasks, files, ep_files[0]
