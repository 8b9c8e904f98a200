"""LeRobot datasets: the real GR00T demo (v2.0, with three known defects), v3.0 writing and resuming,
conversion, and malformed copies that must fail with the file and the field named."""

from __future__ import annotations

import importlib.util
import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from av.video.reformatter import VideoReformatter

from sage_distill.robot.datasets import DatasetError, LeRobotWriter, convert, describe, open_dataset, video

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "data" / "gr00t-demo" / "robot_sim.PickNPlace"
needs_fixture = pytest.mark.skipif(not FIXTURE.is_dir(), reason=f"GR00T demo dataset not found at {FIXTURE}")
EGO = "observation.images.ego_view"
LENGTHS = [416, 470, 470, 412, 328]
STATE_VARYING = list(range(0, 13)) + list(range(22, 35))  # arms and hands; legs, neck, waist never move
ACTION_VARYING = list(range(0, 7)) + list(range(22, 34))


def data_file(root: Path, e: int) -> Path:
    return root / "data" / "chunk-000" / f"episode_{e:06d}.parquet"


def video_file(root: Path, e: int) -> Path:
    return root / "videos" / "chunk-000" / EGO / f"episode_{e:06d}.mp4"


def edit_json(path: Path, edit) -> None:
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))


def edit_parquet(path: Path, edit) -> None:
    pq.write_table(edit(pq.read_table(path)), path)


def copy_fixture(dst: Path, repair: tuple[str, ...] = ()) -> Path:
    """A writable copy (videos linked); `repair` removes known defects: "timestamps", "egoview", "totals"."""
    shutil.copytree(FIXTURE / "meta", dst / "meta")
    shutil.copytree(FIXTURE / "data", dst / "data")
    for e in range(5):
        video_file(dst, e).parent.mkdir(parents=True, exist_ok=True)
        video_file(dst, e).symlink_to(video_file(FIXTURE, e))
    info = dst / "meta" / "info.json"
    if "egoview" in repair:
        edit_json(info, lambda i: i["features"].pop("observation.images.egoview"))
    if "totals" in repair:
        edit_json(info, lambda i: i.update(total_videos=5, total_chunks=1))
    if "timestamps" in repair:
        for e in range(5):
            edit_parquet(data_file(dst, e), lambda t: t.set_column(
                t.column_names.index("timestamp"), "timestamp", pc.subtract(t.column("timestamp"), 0.05)))
    return dst


def decode_all(path: Path) -> np.ndarray:
    """Every frame of a video in pts order, decoded independently of the package."""
    rgb = VideoReformatter()
    with av.open(str(path)) as c:
        frames = sorted(((f.pts, rgb.reformat(f, format="rgb24").to_ndarray()) for f in c.decode(c.streams.video[0])),
                        key=lambda x: x[0])
    return np.stack([f for _, f in frames])


@pytest.fixture(scope="module")
def gr00t():
    if not FIXTURE.is_dir():
        pytest.skip(f"GR00T demo dataset not found at {FIXTURE}")
    return open_dataset(FIXTURE)


@pytest.fixture(scope="module")
def converted(gr00t, tmp_path_factory):
    return convert(FIXTURE, tmp_path_factory.mktemp("v3") / "pick")


# ------------------------------------------------------------------------------------------- the fixture


@needs_fixture
def test_gr00t_opens_as_v20_with_exactly_the_three_named_fixes(gr00t):
    ds = gr00t
    assert (ds.version, ds.fps, ds.robot_type) == ("v2.0", 20.0, "GR1ArmsOnly")
    assert [e.length for e in ds.episodes] == LENGTHS and ds.num_frames == 2096
    assert ds.episodes[0].tasks == ["pick the pear from the counter and place it in the plate", "valid"]
    assert len(ds.tasks) == 6
    assert ds.video_keys == [EGO] and "observation.images.egoview" not in ds.features
    assert ds.features["observation.state"]["shape"] == [44] and ds.features["action"]["shape"] == [44]
    assert sorted(ds.fixes) == sorted([
        "timestamps: parquet starts 1 frame (0.050 s) after the video; shifted by -0.050 s",
        "feature observation.images.egoview: declared but no video files; dropped",
        "info.json total_videos says 2, found 5; using 5; total_chunks says 0, found 1; using 1",
    ])
    assert np.nonzero(ds.varying("observation.state"))[0].tolist() == STATE_VARYING  # 26 dims
    assert np.nonzero(ds.varying("action"))[0].tolist() == ACTION_VARYING  # 19 dims
    text = describe(ds)
    assert "26/44 dims vary: 0-12, 22-34" in text and "19/44 dims vary: 0-6, 22-33" in text
    assert "5 episodes, 2096 frames" in text and "fixes applied (3)" in text


@needs_fixture
def test_gr00t_frames_are_aligned_with_rows(gr00t):
    fr = gr00t.frames(4)
    table = pq.read_table(data_file(FIXTURE, 4))
    assert fr[EGO].shape == (328, 256, 256, 3) and fr[EGO].dtype == np.uint8
    assert fr["observation.state"].shape == (328, 44) and fr["observation.state"].dtype == np.float32
    np.testing.assert_array_equal(fr["action"], np.array(table["action"].to_pylist(), dtype=np.float32))
    # the fix moved the parquet clock back one frame: row i is video frame i, starting at 0
    assert abs(fr["timestamp"][0]) < 1e-6 and np.allclose(np.diff(fr["timestamp"]), 0.05, atol=1e-4)
    direct = decode_all(video_file(FIXTURE, 4))
    assert len(direct) == 328
    for i in (0, 1, 164, 327):
        np.testing.assert_array_equal(fr[EGO][i], direct[i])
    assert gr00t.frames(1, ["next.done"])["next.done"][-1, 0]  # the last row of an episode is done


@needs_fixture
@pytest.mark.parametrize("defect, file, field", [
    ("timestamps", "data/chunk-000/episode_000000.parquet", "timestamp"),
    ("egoview", "meta/info.json", "features.observation.images.egoview"),
    ("totals", "meta/info.json", "total_videos"),
])
def test_gr00t_each_defect_raises_without_fix(tmp_path, defect, file, field):
    root = copy_fixture(tmp_path / "ds", repair=tuple({"timestamps", "egoview", "totals"} - {defect}))
    with pytest.raises(DatasetError) as err:
        open_dataset(root, fix=False)
    assert err.value.file == str(root / file) and err.value.where == field
    assert f"{root / file}: {field}: " in str(err.value)
    assert len(open_dataset(root).fixes) == 1


@needs_fixture
def test_gr00t_repaired_copy_needs_no_fix(tmp_path):
    ds = open_dataset(copy_fixture(tmp_path / "ds", repair=("timestamps", "egoview", "totals")), fix=False)
    assert ds.fixes == [] and ds.num_frames == 2096


@needs_fixture
def test_gr00t_action_chunks(gr00t):
    deltas = [0.05 * j for j in range(16)]
    out = gr00t.chunks(4, {"action": deltas})
    act = gr00t.frames(4, ["action"])["action"]
    t = len(act)
    assert out["action"].shape == (t, 16, 44) and out["action_is_pad"].shape == (t, 16)
    idx = np.arange(t)[:, None] + np.arange(16)[None, :]
    np.testing.assert_array_equal(out["action"], act[np.minimum(idx, t - 1)])
    np.testing.assert_array_equal(out["action"][100, 5], act[105])
    np.testing.assert_array_equal(out["action_is_pad"], idx >= t)
    assert not out["action_is_pad"][: t - 15].any() and out["action_is_pad"].sum() == sum(range(16))
    past = gr00t.chunks(4, {"observation.state": [-0.1, 0.0]})
    assert past["observation.state_is_pad"][:2, 0].all() and not past["observation.state_is_pad"][2:].any()
    with pytest.raises(DatasetError, match=r"deltas\[action\]"):
        gr00t.chunks(4, {"action": [0.03]})


@needs_fixture
def test_gr00t_converts_to_v30(gr00t, converted, tmp_path):
    src, out = gr00t, open_dataset(converted.root, fix=False)
    assert out.version == "v3.0" and out.fixes == [] and out.video_keys == [EGO]
    assert [e.length for e in out.episodes] == LENGTHS and [e.tasks for e in out.episodes] == [
        e.tasks for e in src.episodes] and out.tasks == src.tasks
    for e in range(5):
        a, b = src.frames(e, [k for k in src.features if k != EGO], raw=True), out.frames(e, raw=True, keys=[
            k for k in src.features if k != EGO])
        for k in a:
            if k == "timestamp":
                np.testing.assert_allclose(a[k], b[k], atol=1e-4)
            else:
                assert a[k].dtype == b[k].dtype
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    before, after = src.frames(4, [EGO])[EGO], out.frames(4, [EGO])[EGO]
    assert after.shape == before.shape
    assert np.abs(before.astype(np.int16) - after).mean() < 4
    info = json.loads((converted.root / "meta" / "info.json").read_text())
    assert "video_info" not in info["features"][EGO] and info["features"][EGO]["info"]["video.codec"]
    # a finished conversion is returned as is; a foreign non-empty folder is refused
    assert convert(FIXTURE, converted.root).num_frames == 2096
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not a conversion"):
        convert(FIXTURE, tmp_path / "other")


# ------------------------------------------------------------------------------------------- the writer

FEATURES = {
    "observation.state": {"dtype": "float32", "shape": [4], "names": ["x", "y", "z", "gripper"]},
    "observation.images.corner2": {"dtype": "video", "shape": [16, 16, 3], "names": ["height", "width", "channel"]},
    "action": {"dtype": "float32", "shape": [2], "names": None},
}


def synthetic(e: int, t: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(e)
    y, x = np.mgrid[0:16, 0:16]
    video = np.stack([np.stack([x * 6 + 9 * k, y * 6 + 5 * k, (x + y) * 3 + 7 * k + 40 * e], -1) % 256
                      for k in range(t)]).astype(np.uint8)  # gradients; frames far apart, so alignment shows
    return {"observation.state": rng.normal(size=(t, 4)).astype(np.float32),
            "observation.images.corner2": video, "action": rng.normal(size=(t, 2)).astype(np.float32)}


def extra(e: int) -> dict:
    return {"task_name": "push-v3" if e % 2 else "reach-v3", "seed": e, "variant": "train"}


def test_writer_round_trip(tmp_path):
    eps = [synthetic(e, t) for e, t in enumerate([12, 7, 9])]
    w = LeRobotWriter(tmp_path / "ds", fps=80, robot_type="sawyer", features=FEATURES, episodes_per_file=2)
    for e, frames in enumerate(eps):
        assert w.add_episode(frames, task=extra(e)["task_name"], extra=extra(e)) == e
    w.close()
    ds = open_dataset(tmp_path / "ds", fix=False)
    assert (ds.version, ds.fps, ds.robot_type, ds.fixes) == ("v3.0", 80, "sawyer", [])
    assert [(e.index, e.length, e.tasks, e.extra) for e in ds.episodes] == [
        (e, len(f["action"]), [extra(e)["task_name"]], extra(e)) for e, f in enumerate(eps)]
    assert ds.tasks == ["reach-v3", "push-v3"]
    for e, frames in enumerate(eps):
        got = ds.frames(e)
        np.testing.assert_array_equal(got["observation.state"], frames["observation.state"])
        np.testing.assert_array_equal(got["action"], frames["action"])
        np.testing.assert_array_equal(got["frame_index"][:, 0], np.arange(len(frames["action"])))
        np.testing.assert_array_equal(got["task_index"][:, 0], e % 2)
        video, want = got["observation.images.corner2"].astype(np.int16), frames["observation.images.corner2"]
        assert np.abs(video - want).mean() < 8
        dist = np.abs(video[:, None] - want[None]).mean(axis=(2, 3, 4))  # decoded frame i vs input frame j
        np.testing.assert_array_equal(dist.argmin(1), np.arange(len(want)))
    # two flushes: episodes 0-1 in file 0, episode 2 in file 1; the video of episode 1 starts 12 frames in
    assert pq.read_table(tmp_path / "ds" / "data" / "chunk-000" / "file-001.parquet").num_rows == 9
    meta = pq.read_table(tmp_path / "ds" / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert meta[1]["videos/observation.images.corner2/from_timestamp"] == pytest.approx(12 / 80)
    stats = json.loads((tmp_path / "ds" / "meta" / "stats.json").read_text())
    np.testing.assert_allclose(stats["action"]["mean"], np.concatenate([f["action"] for f in eps]).mean(0), rtol=1e-5)
    assert stats["action"]["count"] == [28]
    # chunks on a video key
    ch = ds.chunks(1, {"observation.images.corner2": [-1 / 80, 0.0]})
    assert ch["observation.images.corner2"].shape == (7, 2, 16, 16, 3)
    assert ch["observation.images.corner2_is_pad"][:, 0].tolist() == [True] + [False] * 6


def test_writer_validates_dims(tmp_path):
    w = LeRobotWriter(tmp_path / "ds", fps=10, robot_type="sawyer", features=FEATURES)
    bad = synthetic(0, 5)
    bad["observation.state"] = bad["observation.state"][:, :3]
    with pytest.raises(DatasetError, match=r"frames\[observation.state\].*\(5, 3\)"):
        w.add_episode(bad, task="t")
    with pytest.raises(DatasetError, match=r"frames\[action\]: missing"):
        w.add_episode({k: v for k, v in synthetic(0, 5).items() if k != "action"}, task="t")


def test_writer_resumes_after_a_kill(tmp_path):
    root = tmp_path / "ds"
    eps = [synthetic(e, 6 + e) for e in range(3)]
    w = LeRobotWriter(root, fps=80, robot_type="sawyer", features=FEATURES, episodes_per_file=2)
    w.add_episode(eps[0], task="reach-v3", extra=extra(0))
    w.add_episode(eps[1], task="push-v3", extra=extra(1))  # the second episode flushes file 0
    # a kill during the next flush: its data file and a temp file are on disk, its episodes file is not
    shutil.copy(root / "data" / "chunk-000" / "file-000.parquet", root / "data" / "chunk-000" / "file-001.parquet")
    (root / "videos" / "observation.images.corner2" / "chunk-000" / ".file-001.mp4.x.tmp").write_bytes(b"half")
    del w
    w = LeRobotWriter(root, fps=80, robot_type="sawyer", features=FEATURES, episodes_per_file=2)
    assert [(e.index, e.extra) for e in w.done()] == [(0, extra(0)), (1, extra(1))]
    assert not list(root.glob("**/.*.tmp"))
    assert w.add_episode(eps[2], task="reach-v3", extra=extra(2)) == 2
    w.close()
    ds = open_dataset(root, fix=False)
    assert [e.index for e in ds.episodes] == [0, 1, 2] and ds.num_frames == 6 + 7 + 8
    assert ds.tasks == ["reach-v3", "push-v3"]
    index = np.concatenate([ds.frames(e, ["index"])["index"][:, 0] for e in range(3)])
    np.testing.assert_array_equal(index, np.arange(21))  # no duplicated rows
    assert pq.read_table(root / "data" / "chunk-000" / "file-001.parquet").num_rows == 8  # the orphan was replaced
    np.testing.assert_array_equal(ds.frames(2)["action"], eps[2]["action"])
    with pytest.raises(DatasetError, match="fps"):
        LeRobotWriter(root, fps=20, robot_type="sawyer", features=FEATURES)


# ------------------------------------------------------------------------------------------- malformed


@needs_fixture
def test_missing_video_file(tmp_path):
    root = copy_fixture(tmp_path / "ds")
    video_file(root, 2).unlink()
    with pytest.raises(DatasetError) as err:
        open_dataset(root)
    assert err.value.file == str(video_file(root, 2)) and err.value.where == EGO and "missing" in str(err.value)


@needs_fixture
def test_wrong_state_dims(tmp_path):
    root = copy_fixture(tmp_path / "ds")
    short = pa.array([r[:43] for r in pq.read_table(data_file(root, 1))["observation.state"].to_pylist()])
    edit_parquet(data_file(root, 1), lambda t: t.set_column(0, "observation.state", short))
    with pytest.raises(DatasetError, match=r"episode_000001\.parquet: observation\.state: rows hold \[43\].*\[44\]"):
        open_dataset(root)


@needs_fixture
def test_non_monotonic_timestamps(tmp_path):
    root = copy_fixture(tmp_path / "ds")
    ts = np.array(pq.read_table(data_file(root, 3))["timestamp"].to_pylist())
    ts[[10, 11]] = ts[[11, 10]]
    edit_parquet(data_file(root, 3), lambda t: t.set_column(t.column_names.index("timestamp"), "timestamp",
                                                            pa.array(ts)))
    with pytest.raises(DatasetError, match=r"episode_000003\.parquet: timestamp: not increasing .* row 10"):
        open_dataset(root)


@needs_fixture
def test_truncated_parquet(tmp_path):
    root = copy_fixture(tmp_path / "ds")
    data = data_file(root, 0).read_bytes()
    data_file(root, 0).write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"episode_000000\.parquet: footer: parquet cannot be read"):
        open_dataset(root)


@needs_fixture
def test_missing_info_json(tmp_path):
    root = copy_fixture(tmp_path / "ds")
    (root / "meta" / "info.json").unlink()
    with pytest.raises(DatasetError, match=r"meta/info\.json: file not found"):
        open_dataset(root)


@needs_fixture
def test_episode_index_gap(tmp_path):
    root = copy_fixture(tmp_path / "ds")
    path = root / "meta" / "episodes.jsonl"
    path.write_text("\n".join(line for line in path.read_text().splitlines() if '"episode_index": 2,' not in line))
    with pytest.raises(DatasetError, match=r"episodes\.jsonl: episode_index: episode 2 is missing"):
        open_dataset(root)


@needs_fixture
def test_video_frames_differ_from_rows(tmp_path):
    root = copy_fixture(tmp_path / "ds")
    edit_parquet(data_file(root, 0), lambda t: t.slice(0, 400))
    edit_json(root / "meta" / "info.json", lambda i: i.update(total_frames=2080))
    path = root / "meta" / "episodes.jsonl"
    path.write_text(path.read_text().replace('"length": 416', '"length": 400'))
    with pytest.raises(DatasetError, match=rf"{EGO} frames: episode 0 has 416 video frames but 400 parquet rows"):
        open_dataset(root)


@needs_fixture
def test_one_video_frame_short_is_a_named_fix(tmp_path):
    root = copy_fixture(tmp_path / "ds", repair=("timestamps", "egoview", "totals"))
    # one more row than the video has frames: the last row can only show the last frame
    edit_parquet(data_file(root, 4), lambda t: pa.concat_tables([t, t.slice(327, 1).set_column(
        t.column_names.index("timestamp"), "timestamp", pa.array([328 * 0.05]))]))
    edit_json(root / "meta" / "info.json", lambda i: i.update(total_frames=2097))
    path = root / "meta" / "episodes.jsonl"
    path.write_text(path.read_text().replace('"length": 328', '"length": 329'))
    ds = open_dataset(root)
    assert ds.fixes == [f"episode 4: {EGO} video has 1 frame fewer than the rows; the last row shows the last frame"]
    video = ds.frames(4, [EGO])[EGO]
    assert len(video) == 329 and np.array_equal(video[-1], video[-2])
    with pytest.raises(DatasetError, match=rf"episode_000004\.mp4: {EGO} frames: episode 4 has 328 video frames"):
        open_dataset(root, fix=False)


def test_truncated_v30_data_file(tmp_path):
    root = tmp_path / "ds"
    with LeRobotWriter(root, fps=10, robot_type="sawyer", features=FEATURES) as w:
        w.add_episode(synthetic(0, 5), task="t")
    path = root / "data" / "chunk-000" / "file-000.parquet"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DatasetError, match=r"file-000\.parquet: footer: .*truncated or corrupt"):
        open_dataset(root)


# ------------------------------------------------------------------------------------------- the OpenCV backend

needs_cv2 = pytest.mark.skipif(importlib.util.find_spec("cv2") is None, reason="OpenCV (cv2) is not installed")
CAM = "observation.images.corner2"


def write_episodes(root: Path, eps: list[dict], **kw) -> None:
    with LeRobotWriter(root, fps=80, robot_type="sawyer", features=FEATURES, episodes_per_file=2, **kw) as w:
        for e, frames in enumerate(eps):
            assert w.add_episode(frames, task=extra(e)["task_name"], extra=extra(e)) == e


def check_episodes(ds, eps: list[dict]) -> list[np.ndarray]:
    """Values exact, video within tolerance and each decoded frame nearest its own input; returns the videos."""
    assert [(e.index, e.length, e.extra) for e in ds.episodes] == [(e, len(f["action"]), extra(e))
                                                                  for e, f in enumerate(eps)]
    videos = []
    for e, frames in enumerate(eps):
        got = ds.frames(e)
        np.testing.assert_array_equal(got["observation.state"], frames["observation.state"])
        np.testing.assert_array_equal(got["action"], frames["action"])
        start = sum(len(f["action"]) for f in eps[:e])
        np.testing.assert_array_equal(got["index"][:, 0], start + np.arange(len(frames["action"])))
        video, want = got[CAM].astype(np.int16), frames[CAM]
        assert video.shape == want.shape and np.abs(video - want).mean() < 8
        dist = np.abs(video[:, None] - want[None]).mean(axis=(2, 3, 4))
        np.testing.assert_array_equal(dist.argmin(1), np.arange(len(want)))
        videos.append(got[CAM])
    return videos


def gradient(t: int, side: int = 128) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side]
    return np.stack([np.stack([(x * 2 + 3 * k) % 256, (y * 2 + 2 * k) % 256, (x + y + 5 * k) % 256], -1)
                     for k in range(t)]).astype(np.uint8)


@needs_cv2
def test_video_backend_switch(monkeypatch):
    monkeypatch.setenv(video.BACKEND_ENV, "quicktime")
    with pytest.raises(DatasetError, match="SAGE_VIDEO_BACKEND: 'quicktime' is not a video backend"):
        video.backend()
    monkeypatch.delenv(video.BACKEND_ENV)
    assert video.backend() == "pyav"
    monkeypatch.setattr(video, "av", None)  # what a machine without PyAV sees
    assert video.backend() == "opencv"
    monkeypatch.setenv(video.BACKEND_ENV, "pyav")
    with pytest.raises(DatasetError, match="PyAV, which is not installed"):
        video.backend()


@needs_cv2
def test_opencv_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv(video.BACKEND_ENV, "opencv")
    codec = video.pick_codec()
    assert codec in ("avc1", "mp4v")
    eps = [synthetic(e, t) for e, t in enumerate([12, 7, 9])]
    root = tmp_path / "ds"
    write_episodes(root, eps)
    assert not [p for p in root.glob("**/.*") if p.is_file()]  # no temp files left
    ds = open_dataset(root, fix=False)
    assert (ds.version, ds.fps, ds.fixes, ds.tasks) == ("v3.0", 80, [], ["reach-v3", "push-v3"])
    check_episodes(ds, eps)
    ch = ds.chunks(1, {CAM: [-1 / 80, 0.0]})  # episode 1 starts 12 frames into file 0
    assert ch[f"{CAM}_is_pad"][:, 0].tolist() == [True] + [False] * 6
    np.testing.assert_array_equal(ch[CAM][1:, 0], ds.frames(1, [CAM])[CAM][:-1])
    info = json.loads((root / "meta" / "info.json").read_text())["features"][CAM]["info"]
    assert info["video.encoder"] == codec and info["video.codec"] == {"avc1": "h264", "mp4v": "mpeg4"}[codec]
    assert "opencv.version" in info and "pyav.version" not in info
    # 128x128 gradients: within the error bound, frame times i / fps
    frames = gradient(40)
    path = tmp_path / "g.mp4"
    path.write_bytes(video.encode_video(frames, 80, codec))
    pts, tb = video.frame_pts(path)
    assert tb == Fraction(1, 80) and pts.tolist() == list(range(40))
    assert np.abs(video.decode_frames(path, pts).astype(np.int16) - frames).mean() < 8
    np.testing.assert_array_equal(video.decode_frames(path, np.array([30, 5, 5])),
                                  video.decode_frames(path, pts)[[30, 5, 5]])  # backwards: decoded again


@needs_cv2
def test_opencv_resumes_after_a_kill(tmp_path, monkeypatch):
    monkeypatch.setenv(video.BACKEND_ENV, "opencv")
    root = tmp_path / "ds"
    eps = [synthetic(e, 6 + e) for e in range(3)]
    w = LeRobotWriter(root, fps=80, robot_type="sawyer", features=FEATURES, episodes_per_file=2)
    w.add_episode(eps[0], task="reach-v3", extra=extra(0))
    w.add_episode(eps[1], task="push-v3", extra=extra(1))  # flushes file 0
    w.add_episode(eps[2], task="reach-v3", extra=extra(2))  # file 1's video is being written to a temp file
    temps = list((root / "videos" / CAM / "chunk-000").glob(".file-001.mp4.*.tmp.mp4"))
    assert len(temps) == 1 and not (root / "videos" / CAM / "chunk-000" / "file-001.mp4").exists()
    shutil.copy(root / "data" / "chunk-000" / "file-000.parquet", root / "data" / "chunk-000" / "file-001.parquet")
    del w  # killed
    w = LeRobotWriter(root, fps=80, robot_type="sawyer", features=FEATURES, episodes_per_file=2)
    assert [e.index for e in w.done()] == [0, 1] and not temps[0].exists()
    w.add_episode(eps[2], task="reach-v3", extra=extra(2))
    w.close()
    check_episodes(open_dataset(root, fix=False), eps)
    # the other backend would write another codec into the same dataset: refused
    monkeypatch.setenv(video.BACKEND_ENV, "pyav")
    with pytest.raises(DatasetError, match=r"info\.json: features\..*video\.encoder: the folder's videos are"):
        LeRobotWriter(root, fps=80, robot_type="sawyer", features=FEATURES)


@needs_cv2
def test_cross_backend_read(tmp_path, monkeypatch):
    eps = [synthetic(e, t) for e, t in enumerate([10, 6, 8])]
    # written by OpenCV, read by both
    monkeypatch.setenv(video.BACKEND_ENV, "opencv")
    write_episodes(tmp_path / "cv", eps)
    by_cv = check_episodes(open_dataset(tmp_path / "cv", fix=False), eps)
    monkeypatch.setenv(video.BACKEND_ENV, "pyav")
    by_av = check_episodes(open_dataset(tmp_path / "cv", fix=False), eps)
    for a, b in zip(by_cv, by_av, strict=True):
        assert np.abs(a.astype(np.int16) - b).mean() < 2  # two decoders' colour conversions
    with av.open(str(tmp_path / "cv" / "videos" / CAM / "chunk-000" / "file-000.mp4")) as c:
        assert c.streams.video[0].codec_context.name in ("mpeg4", "h264")
    # written by PyAV as MPEG-4 part 2, read by OpenCV
    write_episodes(tmp_path / "av-mpeg4", eps, video_codec="mpeg4")
    monkeypatch.setenv(video.BACKEND_ENV, "opencv")
    check_episodes(open_dataset(tmp_path / "av-mpeg4", fix=False), eps)
    # written by PyAV as AV1 (its default): OpenCV's FFmpeg cannot decode it, and says so when the dataset opens
    monkeypatch.setenv(video.BACKEND_ENV, "pyav")
    write_episodes(tmp_path / "av1", eps, video_codec="libsvtav1")
    monkeypatch.setenv(video.BACKEND_ENV, "opencv")
    try:
        check_episodes(open_dataset(tmp_path / "av1", fix=False), eps)  # an OpenCV whose FFmpeg decodes AV1
    except DatasetError as err:
        assert err.file == str(tmp_path / "av1" / "videos" / CAM / "chunk-000" / "file-000.mp4")
        assert "cannot decode av1 without PyAV; install av" in str(err)


# ------------------------------------------------------------------------------------------- bounds (issue 18)

STATE_FEATURES = {k: f for k, f in FEATURES.items() if f["dtype"] != "video"}


def state_dataset(root: Path, action_value: float | None = None) -> Path:
    """Two tiny state-only episodes (no video: cheap); `action_value` written into episode 1, row 2."""
    w = LeRobotWriter(root, fps=10, robot_type="sawyer", features=STATE_FEATURES)
    for e in range(2):
        frames = {k: v for k, v in synthetic(e, 5).items() if k in STATE_FEATURES}
        if e == 1 and action_value is not None:
            frames["action"][2, 1] = action_value
        w.add_episode(frames, task="reach-v3", extra=extra(e))
    w.close()
    return root


def test_writer_deletes_only_its_own_temp_files(tmp_path):
    root = state_dataset(tmp_path / "ds")
    mine = [root / ".notes.tmp", root / "data" / ".backup.tmp", root / "meta" / ".my.json.tmp",
            root / "sub" / ".file-000.parquet.x.tmp"]
    for p in mine:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("the user's")
    own = root / "data" / "chunk-000" / ".file-001.parquet.k2j_x.tmp"
    own.write_bytes(b"half")
    LeRobotWriter(root, fps=10, robot_type="sawyer", features=STATE_FEATURES)
    assert all(p.read_text() == "the user's" for p in mine) and not own.exists()


@pytest.mark.parametrize("template", ["../outside/file-{file_index:03d}.parquet", "/etc/{chunk_index}.parquet",
                                      "data/../../x/{file_index}.parquet"])
def test_reader_refuses_paths_outside_the_dataset(tmp_path, template):
    root = state_dataset(tmp_path / "ds")
    edit_json(root / "meta" / "info.json", lambda i: i.update(data_path=template))
    with pytest.raises(DatasetError, match="leaves the dataset folder") as err:
        open_dataset(root)
    assert err.value.where == "data_path" and err.value.file == str(root / "meta" / "info.json")


@pytest.mark.parametrize("fps", [float("nan"), float("inf"), 0, -5, 0.0001, 1e9])
def test_reader_refuses_absurd_fps(tmp_path, fps):
    root = state_dataset(tmp_path / "ds")
    edit_json(root / "meta" / "info.json", lambda i: i.update(fps=fps))
    with pytest.raises(DatasetError, match="frames per second") as err:
        open_dataset(root)
    assert err.value.where == "fps"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 3e12])
def test_reader_refuses_non_finite_numbers(tmp_path, value):
    root = state_dataset(tmp_path / "ds", action_value=value)
    with pytest.raises(DatasetError, match=r"episode 1 row 2 value 1") as err:
        open_dataset(root)
    assert err.value.where == "action" and err.value.file.endswith("file-000.parquet")
