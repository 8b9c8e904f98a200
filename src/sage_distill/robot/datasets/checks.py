"""The checks `open_dataset` runs before handing out a dataset, and the three known-defect fixes."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from .base import CHUNKS_SIZE, TOL_S, DatasetError, Episode, column_to_numpy, read_parquet
from .layouts import EpisodeFiles, VideoRef
from .video import frame_pts

MIN_FPS, MAX_FPS = 0.1, 10_000.0  # frames per second a real recording can have
MAX_ABS = 1e9  # no action, state or timestamp of a robot dataset is this large


def check_finite(values: np.ndarray, file: Path, episode: int, key: str) -> None:
    """Numbers of one column of one episode: finite and below MAX_ABS, or a DatasetError naming the file, the
    episode, the field and the first bad row."""
    if values.dtype.kind not in "fiu" or not values.size:
        return
    flat = values.reshape(len(values), -1)
    bad = ~np.isfinite(flat) | (np.abs(flat) > MAX_ABS) if values.dtype.kind == "f" else np.abs(flat) > MAX_ABS
    if bad.any():
        r, c = (int(x[0]) for x in np.nonzero(bad))
        what = "not a finite number" if values.dtype.kind == "f" and not np.isfinite(flat[r, c]) else \
            f"out of range (|value| > {MAX_ABS:g})"
        raise DatasetError(f"episode {episode} row {r} value {c} is {flat[r, c]!r}: {what}", file=file, where=key)


class Checker:
    """The checks of `open_dataset`, with the bookkeeping for fixes."""

    def __init__(self, root: Path, info: dict, info_path: Path, fix: bool) -> None:
        self.root, self.info, self.info_path, self.fix = root, info, info_path, fix
        self.fixes: list[str] = []
        self.pts_cache: dict[Path, tuple[np.ndarray, Fraction]] = {}

    def defect(self, fixed: str, error: DatasetError) -> None:
        """A known defect: record the fix, or raise when fixes are off."""
        if not self.fix:
            raise error
        self.fixes.append(fixed)

    def info_fields(self) -> tuple[float, dict[str, dict]]:
        info, path = self.info, self.info_path
        for key in ("fps", "features", "data_path"):
            if key not in info:
                raise DatasetError("field is missing", file=path, where=key)
        fps = info["fps"]
        if isinstance(fps, bool) or not isinstance(fps, int | float) or not MIN_FPS <= fps <= MAX_FPS:
            raise DatasetError(f"expected frames per second {MIN_FPS:g}..{MAX_FPS:g}, got {fps!r}", file=path,
                               where="fps")
        feats = info["features"]
        if not isinstance(feats, dict):
            raise DatasetError("expected an object", file=path, where="features")
        for k, f in feats.items():
            if not isinstance(f, dict) or not isinstance(f.get("dtype"), str):
                raise DatasetError("expected an object with a dtype", file=path, where=f"features.{k}")
            shape = f.get("shape")
            if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
                raise DatasetError(f"expected a list of sizes, got {shape!r}", file=path, where=f"features.{k}.shape")
            if f["dtype"] == "image":
                raise DatasetError("image features (pictures inside the parquet) are not supported; "
                                   "only video features", file=path, where=f"features.{k}.dtype")
        if any(f["dtype"] == "video" for f in feats.values()) and "video_path" not in info:
            raise DatasetError("field is missing (the dataset has video features)", file=path, where="video_path")
        if "timestamp" not in feats:
            raise DatasetError("feature is missing", file=path, where="features.timestamp")
        return float(fps), feats

    def episode_indices(self, episodes: list[Episode], ep_path: Path) -> None:
        seen = [e.index for e in episodes]
        if seen != list(range(len(seen))):
            ordered = sorted(seen)
            dup = next((a for a, b in zip(ordered, ordered[1:], strict=False) if a == b), None)
            gap = next((i for i, a in enumerate(ordered) if a != i), None)
            problem = (f"episode {dup} is listed twice" if dup is not None else
                       f"episode {gap} is missing (indices must run 0..{len(seen) - 1} in order)" if gap is not None
                       else "episodes are not listed in index order")
            raise DatasetError(problem, file=ep_path, where="episode_index")

    def missing_videos(self, feats: dict[str, dict], files: list[EpisodeFiles]) -> dict[str, dict]:
        """Drop video features that no episode has (or names) a file for: a known defect. A file missing for
        some episodes only, or named by the episode metadata, is an error."""
        kept = dict(feats)
        for k in [k for k, f in feats.items() if f["dtype"] == "video"]:
            refs = [f.videos[k] for f in files]
            present = [r.path is not None and r.path.is_file() for r in refs]
            if files and not any(present) and not any(r.named for r in refs):
                example = next((r.path for r in refs if r.path is not None), None)
                shown = f" (e.g. {example.relative_to(self.root)})" if example else ""
                self.defect(f"feature {k}: declared but no video files; dropped",
                            DatasetError(f"declared as a video but no episode has a video file{shown}",
                                         file=self.info_path, where=f"features.{k}"))
                del kept[k]
                for f in files:
                    del f.videos[k]
            elif not all(present):
                e = present.index(False)
                raise DatasetError(f"video file of episode {e} is missing", file=refs[e].path or self.info_path,
                                   where=k)
        return kept

    def totals(self, episodes: list[Episode], tasks: list[str], files: list[EpisodeFiles], ep_path: Path) -> None:
        info, path = self.info, self.info_path
        found = {"total_episodes": len(episodes), "total_frames": sum(e.length for e in episodes),
                 "total_tasks": len(tasks)}
        for key, n in found.items():
            if key in info and info[key] != n:
                raise DatasetError(f"says {info[key]!r}, found {n} in {ep_path.parent.name}", file=path, where=key)
        # v2.x only: these two are often wrong in datasets converted by hand (a known defect).
        size = int(info.get("chunks_size", CHUNKS_SIZE))
        found = {"total_videos": sum(len(f.videos) for f in files),
                 "total_chunks": len({e.index // size for e in episodes})}
        wrong = {k: n for k, n in found.items() if k in info and info[k] != n}
        if wrong:
            parts = [f"{k} says {info[k]!r}, found {n}; using {n}" for k, n in wrong.items()]
            first = next(iter(wrong))
            self.defect("info.json " + "; ".join(parts),
                        DatasetError(f"says {info[first]!r}, found {wrong[first]}", file=path, where=first))

    def data(self, episodes: list[Episode], files: list[EpisodeFiles], feats: dict[str, dict]) -> list[np.ndarray]:
        """Check every episode's rows; returns each episode's parquet timestamps."""
        stamps, tables = [], {}
        for e, f in zip(episodes, files, strict=True):
            if f.data not in tables:
                tables.clear()  # v3: many episodes share a file, listed in order; keep one file in memory
                tables[f.data] = read_parquet(f.data)
            table = tables[f.data]
            if f.rows is not None:  # v3: this episode's rows, which must be contiguous
                ids = column_to_numpy(table, "episode_index", {"shape": [1]}, f.data).reshape(-1)
                at = np.nonzero(ids == e.index)[0]
                if len(at) and at[-1] - at[0] + 1 != len(at):
                    raise DatasetError(f"rows of episode {e.index} are not contiguous", file=f.data,
                                       where="episode_index")
                start = int(at[0]) if len(at) else 0
                f.rows = slice(start, start + len(at))
                table = table.slice(start, len(at))
            elif "episode_index" in table.column_names:
                ids = column_to_numpy(table, "episode_index", {"shape": [1]}, f.data).reshape(-1)
                bad = np.nonzero(ids != e.index)[0]
                if len(bad):
                    raise DatasetError(f"row {bad[0]} says episode {ids[bad[0]]}, expected {e.index}", file=f.data,
                                       where="episode_index")
            if table.num_rows != e.length:
                raise DatasetError(f"episode {e.index} has {table.num_rows} rows, its metadata says length "
                                   f"{e.length}", file=f.data, where="rows")
            for k, feat in feats.items():
                if feat["dtype"] != "video":
                    values = column_to_numpy(table, k, feat, f.data)  # raises on a missing column or wrong dims
                    check_finite(values, f.data, e.index, k)
            ts = column_to_numpy(table, "timestamp", {"shape": [1]}, f.data).reshape(-1).astype(np.float64)
            check_finite(ts, f.data, e.index, "timestamp")
            back = np.nonzero(np.diff(ts) <= 0)[0]
            if len(back):
                r = int(back[0])
                raise DatasetError(f"not increasing in episode {e.index}: row {r} at {ts[r]:.4f} s, row {r + 1} "
                                   f"at {ts[r + 1]:.4f} s", file=f.data, where="timestamp")
            stamps.append(ts)
        return stamps

    def video_times(self, ref: VideoRef) -> tuple[np.ndarray, np.ndarray, Fraction]:
        """The frames of one episode in its video file: (pts, seconds from the episode's start, time base)."""
        if ref.path not in self.pts_cache:
            self.pts_cache.clear()  # consecutive episodes share v3 files
            self.pts_cache[ref.path] = frame_pts(ref.path)
        pts, tb = self.pts_cache[ref.path]
        sec = pts * float(tb)
        keep = (sec >= ref.from_s - TOL_S) & (sec < ref.to_s - TOL_S)
        return pts[keep], sec[keep] - ref.from_s, tb

    def videos(self, episodes: list[Episode], files: list[EpisodeFiles], stamps: list[np.ndarray], fps: float) -> None:
        """Match every row to a video frame; detect (and fix) a whole-frame offset between parquet and video."""
        times: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
        offsets = []
        for e, f, ts in zip(episodes, files, stamps, strict=True):
            for k, ref in f.videos.items():
                pts, sec, _ = self.video_times(ref)
                if abs(len(sec) - e.length) > 1:
                    raise DatasetError(f"episode {e.index} has {len(sec)} video frames but {e.length} parquet rows",
                                       file=ref.path, where=f"{k} frames")
                times[e.index, k] = pts, sec
                if len(sec) and len(ts):
                    offsets.append((ts[0] - sec[0], e.index, k))
        if offsets:
            self.timestamp_offset(offsets, files, fps)
        for e, f, ts in zip(episodes, files, stamps, strict=True):
            for k, ref in f.videos.items():
                pts, sec = times[e.index, k]
                ref.pts = self.align(e, k, ref, ts - f.shift_s, pts, sec)

    def timestamp_offset(self, offsets: list[tuple[float, int, str]], files: list[EpisodeFiles], fps: float) -> None:
        if all(abs(o) <= TOL_S for o, _, _ in offsets):
            return
        frames = [o * fps for o, _, _ in offsets]
        n = round(frames[0])
        if n == 0 or any(abs(x - n) > 0.05 for x in frames):
            o, e, k = next((o, e, k) for o, e, k in offsets if abs(o) > TOL_S)
            raise DatasetError(f"episode {e} starts {o:+.4f} s from the first frame of its {k} video, and not by the "
                               "same whole number of frames in every episode", file=files[e].data, where="timestamp")
        side, s = ("after" if n > 0 else "before"), abs(n) / fps
        e0 = offsets[0][1]
        self.defect(f"timestamps: parquet starts {abs(n)} frame{'s' * (abs(n) > 1)} ({s:.3f} s) {side} the video; "
                    f"shifted by {-n / fps:+.3f} s",
                    DatasetError(f"starts {abs(n)} frame(s) ({s:.3f} s) {side} the first video frame in every episode; "
                                 "open with fix=True to shift the timestamps", file=files[e0].data, where="timestamp"))
        for o, e, _ in offsets:  # each episode by its own measured offset, so row 0 lands on frame 0 exactly
            files[e].shift_s = o

    def align(self, e: Episode, key: str, ref: VideoRef, ts: np.ndarray, pts: np.ndarray,
              sec: np.ndarray) -> np.ndarray:
        """The pts of the frame shown at each row's timestamp."""
        if not len(ts):
            return pts[:0]
        if not len(sec):
            raise DatasetError(f"episode {e.index} has no video frames", file=ref.path, where=f"{key} frames")
        j = np.clip(np.searchsorted(sec, ts), 1, len(sec) - 1) if len(sec) > 1 else np.zeros(len(ts), np.int64)
        if len(sec) > 1:
            j = np.where(np.abs(sec[j - 1] - ts) <= np.abs(sec[j] - ts), j - 1, j)
        bad = np.nonzero(np.abs(sec[j] - ts) > TOL_S)[0]
        if len(bad) == 1 and bad[0] == len(ts) - 1 and len(sec) == len(ts) - 1:
            self.defect(f"episode {e.index}: {key} video has 1 frame fewer than the rows; the last row shows the "
                        "last frame", DatasetError(f"episode {e.index} has {len(sec)} video frames for {len(ts)} rows",
                                                   file=ref.path, where=f"{key} frames"))
        elif len(bad):
            r = int(bad[0])
            raise DatasetError(f"episode {e.index} row {r} at {ts[r]:.4f} s has no video frame within "
                               f"{TOL_S * 1000:g} ms (nearest at {sec[j[r]]:.4f} s)", file=ref.path,
                               where=f"{key} timestamp")
        return pts[j]
