"""Write LeRobot v3.0, resumably.

Each `flush` writes file number n of every kind: data/chunk-C/file-F.parquet, one
videos/<key>/chunk-C/file-F.mp4 per camera and meta/episodes/chunk-C/file-F.parquet (C, F = divmod(n, 1000)),
each atomically, the episodes file last: an episode exists once its metadata row does, and then all its
files do. Files numbered past the last episodes file are leftovers of a kill and are simply overwritten.
Per-episode stats ride in the episodes file (`stats/<key>/<stat>` columns, as LeRobot does), so
meta/stats.json is re-aggregated after every flush without reading the data back."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from ...utils.io import atomic_write_bytes, atomic_write_json, read_json
from .base import (
    BOOKKEEPING,
    BOOKKEEPING_FEATURES,
    CHUNKS_SIZE,
    DatasetError,
    Episode,
    numpy_to_column,
    read_parquet,
    table_bytes,
)
from .video import TMP_SUFFIX, OpenCVEncoder, VideoEncoder, gop, library_version, open_encoder, pick_codec

DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
RESERVED = {"episode_index", "tasks", "length", "dataset_from_index", "dataset_to_index"}
RESERVED_PREFIXES = ("stats/", "videos/", "data/", "meta/")
STATS = ("min", "max", "mean", "std", "count")
CODEC_FAMILY = {"libsvtav1": "av1", "libaom-av1": "av1", "libx264": "h264", "libopenh264": "h264",
                "mp4v": "mpeg4", "avc1": "h264"}  # the last two: OpenCV fourccs
# Image stats from a sample (LeRobot samples too): this many evenly spaced frames, at most ~64x64 pixels each.
IMAGE_STATS_FRAMES, IMAGE_STATS_SIDE = 32, 64


def _episode_stats(values: np.ndarray, video: bool) -> dict[str, np.ndarray]:
    """min/max/mean/std/count over the episode's frames: per dim, or per channel in [0, 1] for video."""
    if video:
        pick = np.unique(np.linspace(0, len(values) - 1, IMAGE_STATS_FRAMES).round().astype(int))
        step = max(1, min(values.shape[1:3]) // IMAGE_STATS_SIDE)
        x = values[pick, ::step, ::step].reshape(-1, values.shape[-1]).astype(np.float32) / 255.0
        count = len(pick)
    else:
        x, count = values.reshape(len(values), -1).astype(np.float64), len(values)
    return {"min": x.min(0), "max": x.max(0), "mean": x.mean(0, dtype=np.float64),
            "std": x.std(0, dtype=np.float64), "count": np.array([count])}


def aggregate_stats(per_episode: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Pool per-episode stats: weighted means, and variances through E[x^2] (exact for the pooled data)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in per_episode[0] if per_episode else []:
        parts = [s[key] for s in per_episode]
        n = np.array([p["count"][0] for p in parts], dtype=np.float64)
        means = np.stack([p["mean"] for p in parts])
        mean = (n[:, None] * means).sum(0) / n.sum()
        second = (n[:, None] * (np.stack([p["std"] for p in parts]) ** 2 + means**2)).sum(0) / n.sum()
        out[key] = {"min": np.min([p["min"] for p in parts], 0), "max": np.max([p["max"] for p in parts], 0),
                    "mean": mean, "std": np.sqrt(np.maximum(second - mean**2, 0)), "count": np.array([int(n.sum())])}
    return out


# The temp files this project's atomic writes leave when killed: `.{name}.{random}.tmp` beside `{name}`
# (utils.io) and the video encoder's `.{name}.tmp.mp4`. Only those of the files a dataset holds count.
_OWN_TMP = re.compile(r"\.(?P<name>(?:file-\d{3,}\.(?:parquet|mp4))|info\.json|stats\.json|tasks\.parquet"
                      r"|collect_state\.json|collect_summary\.json|sage_collect\.json|sage_convert\.json)"
                      r"\.[A-Za-z0-9_]+(?:\.tmp|" + re.escape(TMP_SUFFIX) + r")")


def own_temp_files(root: Path) -> list[Path]:
    """The temp files a killed writer (or collect / convert) left in the folders a dataset is made of: the
    root, meta/, meta/episodes/chunk-*, data/chunk-*, videos/*/chunk-*. Anything else (a user's own hidden
    file included) is never touched."""
    dirs = [root, root / "meta", *root.glob("meta/episodes/chunk-*"), *root.glob("data/chunk-*"),
            *root.glob("videos/*/chunk-*")]
    out = []
    for d in dirs:
        if d.is_dir() and not d.is_symlink():
            out += [p for p in d.iterdir() if p.is_file() and _OWN_TMP.fullmatch(p.name)]
    return out


class LeRobotWriter:
    """Writes LeRobot v3.0, resumable: re-opening a folder continues it (see the module docstring)."""

    def __init__(self, root: str | Path, *, fps: int, robot_type: str, features: dict[str, dict],
                 episodes_per_file: int = 50, video_codec: str | None = None, tasks: list[str] | None = None) -> None:
        """`tasks` (optional) fixes the first task indices, e.g. to keep a source dataset's task table."""
        self.root = Path(root)
        if isinstance(fps, bool) or not isinstance(fps, int) or fps <= 0:
            raise DatasetError(f"expected a positive integer, got {fps!r}", where="fps")
        if episodes_per_file < 1:
            raise DatasetError(f"must be at least 1, got {episodes_per_file}", where="episodes_per_file")
        self.fps, self.robot_type, self.episodes_per_file = fps, robot_type, episodes_per_file
        self.features = {k: self._check_feature(k, f) for k, f in features.items() if k not in BOOKKEEPING}
        self.video_keys = [k for k, f in self.features.items() if f["dtype"] == "video"]
        self.codec = pick_codec(video_codec) if self.video_keys else None
        self._buffer: list[dict] = []  # episodes since the last flush, video already in the encoders
        self._encoders: dict[str, VideoEncoder | OpenCVEncoder] = {}  # the video files of the next flush, being encoded
        self._done: list[Episode] = []
        self._stats: list[dict[str, dict[str, np.ndarray]]] = []
        self._n_files = 0
        self._tasks: dict[str, int] = {}
        self._resume()
        for t in tasks or []:
            self._task_index(t)

    # ------------------------------------------------------------------------------------------ set-up

    def _check_feature(self, key: str, f: dict) -> dict:
        where = f"features.{key}"
        if not isinstance(f, dict) or not isinstance(f.get("dtype"), str) or not isinstance(f.get("shape"), list):
            raise DatasetError("expected {'dtype': ..., 'shape': [...]}", where=where)
        f = {**f, "shape": [int(d) for d in f["shape"]]}
        if f["dtype"] == "video":  # a source's encoding details do not describe the video written here
            f = {k: v for k, v in f.items() if k not in ("info", "video_info")}
            if len(f["shape"]) != 3 or f["shape"][2] != 3:
                raise DatasetError(f"a video needs shape [height, width, 3], got {f['shape']}", where=where)
            if f["shape"][0] % 2 or f["shape"][1] % 2:
                raise DatasetError(f"yuv420p video needs an even height and width, got {f['shape']}", where=where)
        else:
            try:
                np.dtype(f["dtype"])
            except TypeError:
                raise DatasetError(f"unknown dtype {f['dtype']!r}", where=f"{where}.dtype") from None
        return f

    def _path(self, template: str, n: int, **kw) -> Path:
        chunk, file = divmod(n, CHUNKS_SIZE)
        return self.root / template.format(chunk_index=chunk, file_index=file, **kw)

    @classmethod
    def check_resumable(cls, root: str | Path, *, fps: int, features: dict[str, dict]) -> None:
        """Raise the DatasetError a writer on `root` would (another version, fps or features), writing nothing."""
        info_path = Path(root) / "meta" / "info.json"
        if info_path.is_file():
            cls._check_info(info_path, fps, {k: cls._check_feature(cls, k, f) for k, f in features.items()
                                             if k not in BOOKKEEPING})

    @staticmethod
    def _check_info(info_path: Path, fps: int, features: dict[str, dict]) -> dict:
        info = read_json(info_path, DatasetError)
        if not isinstance(info, dict) or not isinstance(info.get("features", {}), dict):
            raise DatasetError("expected a JSON object with a features object", file=info_path)
        if info.get("codebase_version") != "v3.0":
            raise DatasetError(f"is {info.get('codebase_version')!r}; can only continue a v3.0 dataset",
                               file=info_path, where="codebase_version")
        if info.get("fps") != fps:
            raise DatasetError(f"says {info.get('fps')}, this writer {fps}", file=info_path, where="fps")
        try:
            old = {k: (f.get("dtype"), list(f.get("shape", []))) for k, f in info.get("features", {}).items()
                   if k not in BOOKKEEPING}
        except (AttributeError, TypeError):
            raise DatasetError("malformed feature entries", file=info_path, where="features") from None
        new = {k: (f["dtype"], f["shape"]) for k, f in features.items()}
        if old != new:
            key = next(k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k))
            raise DatasetError(f"the folder has {old.get(key)}, this writer {new.get(key)} (dtype, shape)",
                               file=info_path, where=f"features.{key}")
        return info

    def _resume(self) -> None:
        """Load what a previous run committed; check it was written with the same settings."""
        info_path = self.root / "meta" / "info.json"
        if info_path.is_file():
            info = self._check_info(info_path, self.fps, self.features)
            for k in self.video_keys:  # one codec per dataset, so that info.json describes every file
                was = (info["features"][k].get("info") or {}).get("video.encoder")
                if was is not None and was != self.codec:
                    raise DatasetError(f"the folder's videos are {was!r}, this writer's {self.codec!r}; continue "
                                       "with the same codec (and video backend: SAGE_VIDEO_BACKEND)",
                                       file=info_path, where=f"features.{k}.info.video.encoder")
        for tmp in own_temp_files(self.root):  # temp files of a killed atomic write: this writer's only
            tmp.unlink(missing_ok=True)
        task_path = self.root / "meta" / "tasks.parquet"
        if task_path.is_file():
            table = read_parquet(task_path, "tasks")
            for i, t in sorted(zip(table.column("task_index").to_pylist(), table.column("task").to_pylist(),
                                   strict=True)):
                self._tasks[t] = i
        while self._path(EPISODES_PATH, self._n_files).is_file():
            path = self._path(EPISODES_PATH, self._n_files)
            for row in read_parquet(path, "episode metadata").to_pylist():
                if row["episode_index"] != len(self._done):
                    raise DatasetError(f"episode {row['episode_index']} where {len(self._done)} was expected",
                                       file=path, where="episode_index")
                extra = {k: v for k, v in row.items()
                         if k not in RESERVED and not k.startswith(RESERVED_PREFIXES) and v is not None}
                self._done.append(Episode(row["episode_index"], row["length"], list(row["tasks"]), extra))
                stats: dict[str, dict[str, np.ndarray]] = {}
                for col, v in row.items():
                    if col.startswith("stats/"):
                        key, stat = col[len("stats/"):].rsplit("/", 1)
                        stats.setdefault(key, {})[stat] = np.asarray(v)
                self._stats.append(stats)
                for t in row["tasks"]:
                    self._task_index(t)
            self._n_files += 1

    def _task_index(self, task: str) -> int:
        return self._tasks.setdefault(task, len(self._tasks))

    # ------------------------------------------------------------------------------------------ writing

    def done(self) -> list[Episode]:
        """Episodes already on disk (with their extra metadata): what a resumed run can skip."""
        return list(self._done)

    @property
    def num_frames(self) -> int:
        return sum(e.length for e in self._done) + sum(b["length"] for b in self._buffer)

    def add_episode(self, frames: dict[str, np.ndarray], task: str | list[str], extra: dict | None = None) -> int:
        """Buffer one episode: every feature key -> (T, ...) array, video keys (T, H, W, 3) uint8. `task` may be a
        list (the first is each frame's task), and `frames` may carry a (T,) "task_index" column of its own.
        Flushes every `episodes_per_file` episodes. Returns the episode index."""
        tasks = [task] if isinstance(task, str) else list(task)
        if not tasks or not all(isinstance(t, str) and t for t in tasks):
            raise DatasetError(f"expected a non-empty task string or list of them, got {task!r}", where="task")
        extra = dict(extra or {})
        for k in extra:
            if not isinstance(k, str) or k in RESERVED or k.startswith(RESERVED_PREFIXES) or not k:
                raise DatasetError("is a reserved or invalid episode column name", where=f"extra[{k!r}]")
        unknown = sorted(set(frames) - set(self.features) - {"task_index"})
        if unknown:
            raise DatasetError(f"not a feature of this dataset (features: {', '.join(self.features)})",
                               where=f"frames[{unknown[0]}]")
        length = None
        values: dict[str, np.ndarray] = {}
        for k, f in self.features.items():
            if k not in frames:
                raise DatasetError("missing from the episode's frames", where=f"frames[{k}]")
            v = np.asarray(frames[k])
            length = len(v) if length is None else length
            shape = tuple(f["shape"])
            if v.ndim == 0 or len(v) != length or (v.shape[1:] != shape and not (shape == (1,) and v.ndim == 1)):
                raise DatasetError(f"has shape {v.shape}; expected ({length}, {', '.join(map(str, shape))}) "
                                   f"(features.{k}.shape {list(shape)}, {length} frames)", where=f"frames[{k}]")
            if f["dtype"] == "video" and v.dtype != np.uint8:
                raise DatasetError(f"video frames must be uint8, got {v.dtype}", where=f"frames[{k}]")
            values[k] = v.reshape(length, *shape)
        if not length:
            raise DatasetError("an episode needs at least one frame", where="frames")
        task_ids = [self._task_index(t) for t in tasks]
        if "task_index" in frames:
            ti = np.asarray(frames["task_index"]).reshape(-1).astype(np.int64)
            if len(ti) != length or ti.min() < 0 or ti.max() >= len(self._tasks):
                raise DatasetError(f"needs {length} indices into the {len(self._tasks)} tasks",
                                   where="frames[task_index]")
            values["task_index"] = ti
        else:
            values["task_index"] = np.full(length, task_ids[0], np.int64)
        stats = {k: _episode_stats(values[k], self.features[k]["dtype"] == "video") for k in self.features
                 if np.dtype(values[k].dtype).kind in "biuf"}
        index = len(self._done) + len(self._buffer)
        video_start = {}
        for k in self.video_keys:  # encode now: only compressed video waits for the flush
            if k not in self._encoders:
                h, w, _ = self.features[k]["shape"]
                self._encoders[k] = open_encoder(self.fps, self.codec, h, w,
                                                 self._path(VIDEO_PATH, self._n_files, video_key=k))
            video_start[k] = self._encoders[k].n / self.fps
            self._encoders[k].add(values.pop(k))
        self._buffer.append({"index": index, "length": length, "tasks": tasks, "values": values, "extra": extra,
                             "stats": stats, "video_start": video_start})
        if len(self._buffer) >= self.episodes_per_file:
            self.flush()
        return index

    def flush(self) -> None:
        """Write the buffered episodes as file number n of every kind; the episodes metadata last."""
        if not self._buffer:
            return
        n, buf = self._n_files, self._buffer
        chunk, file = divmod(n, CHUNKS_SIZE)
        first = sum(e.length for e in self._done)  # global index of the first frame written now
        cols: dict[str, pa.Array] = {}
        for k, f in self.features.items():
            if f["dtype"] != "video":
                cols[k] = numpy_to_column(np.concatenate([b["values"][k] for b in buf]), f["dtype"])
        frame_index = np.concatenate([np.arange(b["length"]) for b in buf])
        cols["timestamp"] = pa.array((frame_index / self.fps).astype(np.float32))
        cols["frame_index"] = pa.array(frame_index)
        cols["episode_index"] = pa.array(np.concatenate([np.full(b["length"], b["index"]) for b in buf]))
        cols["index"] = pa.array(np.arange(first, first + len(frame_index)))
        cols["task_index"] = pa.array(np.concatenate([b["values"]["task_index"] for b in buf]))
        atomic_write_bytes(self._path(DATA_PATH, n), table_bytes(pa.table(cols)))
        for k, enc in self._encoders.items():
            enc.save(self._path(VIDEO_PATH, n, video_key=k))
        self._encoders = {}
        self._write_tasks()
        rows, start = [], first
        for b in buf:
            row = {"episode_index": b["index"], "tasks": b["tasks"], "length": b["length"],
                   "data/chunk_index": chunk, "data/file_index": file,
                   "dataset_from_index": start, "dataset_to_index": start + b["length"]}
            for k, t0 in b["video_start"].items():  # where the episode starts inside this flush's video file
                row |= {f"videos/{k}/chunk_index": chunk, f"videos/{k}/file_index": file,
                        f"videos/{k}/from_timestamp": t0, f"videos/{k}/to_timestamp": t0 + b["length"] / self.fps}
            row |= {"meta/episodes/chunk_index": chunk, "meta/episodes/file_index": file}
            row |= {f"stats/{k}/{s}": v.tolist() for k, st in b["stats"].items() for s, v in st.items()}
            rows.append(row | b["extra"])
            start += b["length"]
        try:
            table = pa.Table.from_pylist(rows)
        except (pa.ArrowException, TypeError, ValueError) as e:
            raise DatasetError(f"extra metadata cannot be stored as parquet columns ({e})", where="extra") from None
        atomic_write_bytes(self._path(EPISODES_PATH, n), table_bytes(table))  # the commit point
        self._done += [Episode(b["index"], b["length"], b["tasks"], b["extra"]) for b in buf]
        self._stats += [b["stats"] for b in buf]
        self._n_files, self._buffer = n + 1, []
        self._write_meta()  # keep the folder readable after every flush, not only after close

    def close(self) -> None:
        """Flush, then (re)write meta/info.json, meta/stats.json and meta/tasks.parquet."""
        self.flush()
        self._write_tasks()
        self._write_meta()

    def __enter__(self) -> LeRobotWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()

    def _write_tasks(self) -> None:
        # pandas metadata so that pd.read_parquet (LeRobot's load_tasks) gives the task strings as the index.
        pandas_meta = {"index_columns": ["task"], "column_indexes": [], "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None}],
            "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3"}
        table = pa.table({"task_index": pa.array(list(self._tasks.values()), pa.int64()),
                          "task": pa.array(list(self._tasks), pa.string())})
        table = table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})
        atomic_write_bytes(self.root / "meta" / "tasks.parquet", table_bytes(table))

    def _write_meta(self) -> None:
        features = {}
        for k, f in self.features.items():
            if f["dtype"] == "video":
                h, w, c = f["shape"]
                f = {**f, "names": f.get("names") or ["height", "width", "channels"], "info": {
                    "video.height": h, "video.width": w, "video.codec": CODEC_FAMILY.get(self.codec, self.codec),
                    "video.encoder": self.codec, "video.pix_fmt": "yuv420p", "video.is_depth_map": False,
                    "video.fps": self.fps, "video.channels": c, "video.g": gop(self.codec), "has_audio": False,
                    **library_version(self.codec)}}
            features[k] = {**f, "names": f.get("names")}
        features.update(BOOKKEEPING_FEATURES)
        n = len(self._done)
        info = {"codebase_version": "v3.0", "robot_type": self.robot_type, "total_episodes": n,
                "total_frames": sum(e.length for e in self._done), "total_tasks": len(self._tasks),
                "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": 100, "video_files_size_in_mb": 500,
                "fps": self.fps, "splits": {"train": f"0:{n}"}, "data_path": DATA_PATH,
                "video_path": VIDEO_PATH if self.video_keys else None, "features": features}
        atomic_write_json(self.root / "meta" / "info.json", info, indent=4)
        stats = aggregate_stats(self._stats)
        for k in self.video_keys:  # LeRobot keeps image stats as (channels, 1, 1)
            if k in stats:
                stats[k] = {s: v.reshape(-1, 1, 1) if s != "count" else v for s, v in stats[k].items()}
        atomic_write_json(self.root / "meta" / "stats.json",
                          {k: {s: v.tolist() for s, v in st.items()} for k, st in stats.items()}, indent=4)
