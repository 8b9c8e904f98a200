"""Read a LeRobot dataset (v2.0, v2.1 or v3.0) into one checked, version-independent view.

`open_dataset` checks everything it can without decoding video: meta files, episode indices, totals,
every data column against its declared shape, timestamps, and every video's frame timestamps against
the parquet rows. Three known defects of real datasets are repaired when `fix=True` (and each repair is
recorded in `dataset.fixes`), else reported: parquet timestamps offset from the video by whole frames,
video features declared in info.json without any files, and wrong total_videos / total_chunks.
Anything else malformed raises a DatasetError naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from ...utils.io import read_json
from .base import TOL_S, DatasetError, Episode, column_to_numpy, read_parquet
from .checks import Checker
from .layouts import EpisodeFiles, load_v2, load_v3
from .video import decode_frames

VERSIONS = ("v2.0", "v2.1", "v3.0")


class LeRobotDataset:
    """A checked LeRobot dataset. Build it with `open_dataset`."""

    def __init__(self, root: Path, version: str, fps: float, robot_type: str | None, features: dict[str, dict],
                 episodes: list[Episode], tasks: list[str], files: list[EpisodeFiles], fixes: list[str]) -> None:
        self.root, self.version, self.fps, self.robot_type = root, version, fps, robot_type
        self.features, self.episodes, self.tasks, self.fixes = features, episodes, tasks, fixes
        self.video_keys = [k for k, f in features.items() if f["dtype"] == "video"]
        self._files = files
        self._cache: tuple[Path, pa.Table] | None = None  # v3 files hold many episodes: keep the last one read
        self._varying: dict[str, np.ndarray] = {}

    @property
    def num_frames(self) -> int:
        return sum(e.length for e in self.episodes)

    def __repr__(self) -> str:
        return (f"LeRobotDataset({str(self.root)!r}, {self.version}, {len(self.episodes)} episodes, "
                f"{self.num_frames} frames, fixes={len(self.fixes)})")

    def _table(self, path: Path) -> pa.Table:
        if self._cache is None or self._cache[0] != path:
            self._cache = (path, read_parquet(path))
        return self._cache[1]

    def _episode_table(self, episode: int) -> pa.Table:
        files = self._files[episode]
        table = self._table(files.data)
        return table if files.rows is None else table.slice(files.rows.start, files.rows.stop - files.rows.start)

    def _check_episode(self, episode: int) -> int:
        if not isinstance(episode, int | np.integer) or not 0 <= episode < len(self.episodes):
            raise DatasetError(f"no episode {episode!r}; this dataset has 0..{len(self.episodes) - 1}",
                               file=self.root, where="episode")
        return int(episode)

    def frames(self, episode: int, keys: list[str] | None = None, *, raw: bool = False) -> dict[str, np.ndarray]:
        """All frames of one episode: each non-video feature as (T, *shape) (float32 for floats unless `raw`),
        'timestamp' (T,) float64 after fixes, and each video key as (T, H, W, 3) uint8, the frame shown at
        each row's timestamp."""
        episode = self._check_episode(episode)
        keys = [k for k in self.features if k != "timestamp"] if keys is None else list(keys)
        for k in keys:
            if k not in self.features:
                raise DatasetError(f"no feature {k!r}; known: {', '.join(self.features)}", file=self.root,
                                   where="keys")
        files, table = self._files[episode], self._episode_table(episode)
        stamps = column_to_numpy(table, "timestamp", {"shape": [1]}, files.data).reshape(-1).astype(np.float64)
        out = {"timestamp": stamps - files.shift_s}
        for k in keys:
            if k == "timestamp":
                continue
            if self.features[k]["dtype"] == "video":
                ref = files.videos[k]
                out[k] = decode_frames(ref.path, ref.pts)
            else:
                values = column_to_numpy(table, k, self.features[k], files.data)
                out[k] = values.astype(np.float32) if not raw and values.dtype.kind == "f" else values
        return out

    def chunks(self, episode: int, deltas: dict[str, list[float]]) -> dict[str, np.ndarray]:
        """delta_timestamps-style windows for every frame: key k with deltas d (seconds) gives k -> (T, len(d),
        *shape), the values at t + d clamped to the episode's ends, and f"{k}_is_pad" -> (T, len(d)) bool,
        True where the clamp applied. Deltas must be whole frames (as LeRobot requires)."""
        episode = self._check_episode(episode)
        frames = self.frames(episode, list(deltas))
        t = self.episodes[episode].length
        out: dict[str, np.ndarray] = {}
        for k, d in deltas.items():
            steps = np.asarray(d, dtype=np.float64).reshape(-1) * self.fps
            shift = np.rint(steps).astype(np.int64)
            bad = np.nonzero(np.abs(steps - shift) > TOL_S * self.fps)[0]
            if len(bad):
                raise DatasetError(f"{d[bad[0]]} s is not a whole number of frames at {self.fps:g} fps",
                                   where=f"deltas[{k}]")
            idx = np.arange(t)[:, None] + shift[None, :]
            out[k] = frames[k][np.clip(idx, 0, t - 1)]
            out[f"{k}_is_pad"] = (idx < 0) | (idx >= t)
        return out

    def varying(self, key: str) -> np.ndarray:
        """Which dims of non-video feature `key` (flattened) take more than one value over the dataset."""
        if key not in self._varying:
            lo = hi = None
            for e in range(len(self.episodes)):
                v = self.frames(e, [key], raw=True)[key]
                v = v.reshape(len(v), -1)
                if len(v):
                    lo = v.min(0) if lo is None else np.minimum(lo, v.min(0))
                    hi = v.max(0) if hi is None else np.maximum(hi, v.max(0))
            size = int(np.prod(self.features[key]["shape"]))
            self._varying[key] = np.zeros(size, bool) if lo is None else lo != hi
        return self._varying[key]


def open_dataset(root: str | Path, fix: bool = True) -> LeRobotDataset:
    """Open and check a LeRobot v2.0 / v2.1 / v3.0 dataset (version from meta/info.json)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError("not a directory", file=root)
    info_path = root / "meta" / "info.json"
    info = read_json(info_path, DatasetError)
    if not isinstance(info, dict):
        raise DatasetError("expected a JSON object", file=info_path)
    version = info.get("codebase_version")
    if version not in VERSIONS:
        raise DatasetError(f"{version!r} is not supported (only {', '.join(VERSIONS)})", file=info_path,
                           where="codebase_version")
    check = Checker(root, info, info_path, fix)
    fps, feats = check.info_fields()
    load = load_v3 if version == "v3.0" else load_v2
    episodes, tasks, files, ep_path = load(root, info, info_path)
    check.episode_indices(episodes, ep_path)
    feats = check.missing_videos(feats, files)
    check.totals(episodes, tasks, files, ep_path)
    stamps = check.data(episodes, files, feats)
    check.videos(episodes, files, stamps, fps)
    robot = info.get("robot_type")
    return LeRobotDataset(root, version, fps, robot if isinstance(robot, str) else None, feats, episodes, tasks,
                          files, check.fixes)

