"""MP4 video: encode an episode's (or several episodes') frames, list a file's frame timestamps without
decoding, and decode exactly the frames wanted, by presentation timestamp.

Two backends. PyAV (`av`) when it imports; OpenCV (`cv2`) when it does not, or when the environment
variable SAGE_VIDEO_BACKEND is "opencv" ("pyav" insists on PyAV; unset or "auto" picks). The OpenCV backend:
- encodes with cv2.VideoWriter, 'avc1' (H.264) where this cv2 build can, else 'mp4v' (MPEG-4 part 2): the
  FFmpeg inside opencv-python has neither libx264 nor an AV1 encoder. cv2 offers no quality setting for
  FFmpeg (VIDEOWRITER_PROP_QUALITY is refused, VIDEOWRITER_PROP_KEY_INTERVAL ignored), so mp4v runs at
  OpenCV's defaults: a keyframe every 12 frames, mean abs error ~3.7 / 255 on a moving 128x128 gradient.
- assumes a CONSTANT frame rate: frame i of a file is at i / CAP_PROP_FPS seconds, the first at 0, and the
  file holds CAP_PROP_FRAME_COUNT frames (the container's count); cv2 gives no packet timestamps without
  decoding. The reader's checks (frames per episode vs rows, row timestamps vs frame times) still run
  on those times.
- decodes sequentially from the first frame (no seeking), keeping the last capture open between calls, so
  that reading a file's episodes in order decodes it once.
- cannot decode AV1 (what the PyAV backend writes by default) with opencv-python's FFmpeg: such a file
  raises a DatasetError naming the file and the codec.
PyAV reads the files of both backends."""

from __future__ import annotations

import functools
import io
import os
import tempfile
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np

from ...utils.io import atomic_write_bytes
from .base import DatasetError

# SVT-AV1 prints a banner of ~20 lines per encoder to stderr; errors only.
os.environ.setdefault("SVT_LOG", "1")

try:
    import av
    from av.video.reformatter import VideoReformatter
except ImportError:  # the OpenCV backend then
    av = None
try:
    import cv2
except ImportError:
    cv2 = None

BACKEND_ENV = "SAGE_VIDEO_BACKEND"
BACKENDS = ("auto", "pyav", "opencv")


def backend() -> str:
    """"pyav" or "opencv": the one SAGE_VIDEO_BACKEND asks for, else PyAV if it imports, else OpenCV.
    Read at every call, so a test (or a process) can switch it."""
    want = os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"
    if want not in BACKENDS:
        raise DatasetError(f"{want!r} is not a video backend; use one of {', '.join(BACKENDS)}", where=BACKEND_ENV)
    if want == "pyav" or (want == "auto" and av is not None):
        if av is None:
            raise DatasetError("asks for PyAV, which is not installed (pip install av)", where=BACKEND_ENV)
        return "pyav"
    if cv2 is None:
        raise DatasetError("neither PyAV (pip install av) nor OpenCV (pip install opencv-python-headless) is "
                           "installed; video needs one" if want == "auto" else
                           "asks for OpenCV, which is not installed (pip install opencv-python-headless)",
                           where=BACKEND_ENV)
    return "opencv"


def library_version(codec: str) -> dict[str, str]:
    """The library that encodes `codec`, for info.json."""
    if codec in OPENCV_CODECS:
        return {"opencv.version": cv2.__version__}
    return {"pyav.version": av.__version__}


def gop(codec: str) -> int:
    """Frames from one keyframe to the next in what `codec` writes here."""
    return 12 if codec in OPENCV_CODECS else 2


# PyAV codecs, in preference order. AV1 is LeRobot v3's default; libsvtav1 (preset 11) encodes 128x128 at
# ~1,300 frames/s on one core (measured), well above the 500/s we need. g=2 (as LeRobot) keeps seeking cheap.
CODEC_OPTIONS: dict[str, dict[str, str]] = {
    "libsvtav1": {"g": "2", "crf": "30", "preset": "11"},
    "libaom-av1": {"g": "2", "crf": "30", "cpu-used": "8", "row-mt": "1"},
    "libx264": {"g": "2", "crf": "18", "preset": "veryfast"},
    "h264": {"g": "2", "crf": "18", "preset": "veryfast"},
    "libopenh264": {"g": "2", "b": "4M"},
    "mpeg4": {"g": "2", "qscale": "2"},
}
# Too slow at 128x128 on this PyAV build (~100 frames/s); only used when asked for by name.
SLOW_CODECS = {"libaom-av1"}
# OpenCV codecs (fourcc -> codec), in preference order; the codec names are accepted for them too.
OPENCV_CODECS = {"avc1": "h264", "mp4v": "mpeg4"}
# What cv2 reports as CAP_PROP_FOURCC (lower-cased) -> the codec, for error messages.
FOURCC_CODECS = {"av01": "av1", "fmp4": "mpeg4", "mp4v": "mpeg4", "xvid": "mpeg4", "h264": "h264", "avc1": "h264",
                 "hevc": "hevc", "hev1": "hevc", "hvc1": "hevc", "vp09": "vp9", "vp80": "vp8", "mjpg": "mjpeg"}
TMP_SUFFIX = ".tmp.mp4"  # cv2.VideoWriter picks the container from the name: its temp files end in .mp4


@functools.cache
def _cv_can_encode(fourcc: str) -> bool:
    with tempfile.TemporaryDirectory() as d:
        w = cv2.VideoWriter(str(Path(d) / "probe.mp4"), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), 10.0,
                            (16, 16))
        ok = w.isOpened()
        w.release()
    return ok


def has_encoder(name: str) -> bool:
    """Whether the current backend can encode `name` (a PyAV codec, or an OpenCV fourcc or its codec)."""
    if backend() == "opencv":
        fourcc = {c: f for f, c in OPENCV_CODECS.items()}.get(name, name)
        return fourcc in OPENCV_CODECS and _cv_can_encode(fourcc)
    try:
        av.Codec(name, "w")
        return True
    except Exception:  # PyAV raises UnknownCodecError or ValueError depending on the build
        return False


def pick_codec(name: str | None = None) -> str:
    """`name` when the current backend can encode it, else the first usable codec in preference order.
    OpenCV codecs are returned as their fourcc ("avc1", "mp4v"); "h264" and "mpeg4" name them too."""
    if backend() == "opencv":
        if name is not None:
            fourcc = {c: f for f, c in OPENCV_CODECS.items()}.get(name, name)
            if not has_encoder(fourcc):
                raise DatasetError(f"the OpenCV video backend cannot encode {name!r} (it has "
                                   f"{', '.join(f for f in OPENCV_CODECS if _cv_can_encode(f)) or 'nothing'})",
                                   where="video_codec")
            return fourcc
        for fourcc in OPENCV_CODECS:
            if _cv_can_encode(fourcc):
                return fourcc
        raise DatasetError("this OpenCV build can encode none of " + ", ".join(OPENCV_CODECS), where="video_codec")
    if name is not None:
        if not has_encoder(name):
            raise DatasetError(f"this PyAV build has no {name!r} encoder", where="video_codec")
        return name
    for codec in CODEC_OPTIONS:
        if codec not in SLOW_CODECS and has_encoder(codec):
            return codec
    raise DatasetError("this PyAV build has none of the video encoders " + ", ".join(CODEC_OPTIONS),
                       where="video_codec")


class VideoEncoder:
    """PyAV: an MP4 (yuv420p) built in memory, frames added as they come: frame i is shown at i / fps seconds.
    Only the compressed bytes are held, so a writer need not buffer raw frames."""

    def __init__(self, fps: int, codec: str, height: int, width: int, path: Path | None = None) -> None:
        self.fps, self.n, self.path, self._buf = fps, 0, path, io.BytesIO()
        self._container = av.open(self._buf, "w", format="mp4")
        self._stream = self._container.add_stream(codec, rate=fps, options=CODEC_OPTIONS.get(codec, {"g": "2"}))
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        self._stream.time_base = Fraction(1, fps)

    def add(self, frames: np.ndarray) -> None:
        """(N, H, W, 3) uint8 frames, appended."""
        for f in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            frame.pts, frame.time_base = self.n, Fraction(1, self.fps)  # the muxer changes the stream's
            self._container.mux(self._stream.encode(frame))
            self.n += 1

    def finish(self) -> bytes:
        self._container.mux(self._stream.encode())
        self._container.close()
        return self._buf.getvalue()

    def save(self, path: Path | None = None) -> None:
        """Finish, and write the file atomically to `path` (default: the path given when opened)."""
        atomic_write_bytes(self.path if path is None else path, self.finish())


class OpenCVEncoder:
    """OpenCV: cv2.VideoWriter into a temp file beside `path` (its name ends in .mp4, which picks the
    container); `save` renames it onto `path`. Frame i is shown at i / fps seconds."""

    def __init__(self, fps: int, codec: str, height: int, width: int, path: Path) -> None:
        self.fps, self.n, self.path, self._size = fps, 0, Path(path), (width, height)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=TMP_SUFFIX)
        os.close(fd)
        self._tmp = Path(tmp)
        self._writer = cv2.VideoWriter(tmp, cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*codec), float(fps), self._size)
        if not self._writer.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise DatasetError(f"OpenCV cannot encode {codec!r} at {width}x{height}", file=self.path,
                               where="video_codec")

    def add(self, frames: np.ndarray) -> None:
        """(N, H, W, 3) uint8 RGB frames, appended."""
        for f in frames:
            if f.shape != (self._size[1], self._size[0], 3):  # VideoWriter would drop it without a word
                raise DatasetError(f"frame of shape {f.shape}, the video is {self._size[1]}x{self._size[0]}x3",
                                   file=self.path)
            self._writer.write(np.ascontiguousarray(f[..., ::-1]))  # cv2 wants BGR
            self.n += 1

    def save(self, path: Path | None = None) -> None:
        """Close the file, fsync it and rename it onto `path` (default: the path given when opened)."""
        path = self.path if path is None else Path(path)
        try:
            self._writer.release()
            if self._tmp.stat().st_size == 0:
                raise DatasetError("OpenCV wrote an empty video", file=path)
            os.chmod(self._tmp, 0o644)
            with open(self._tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(self._tmp, path)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise


def open_encoder(fps: int, codec: str, height: int, width: int, path: Path) -> VideoEncoder | OpenCVEncoder:
    """An encoder for `codec` (from `pick_codec`) whose `save()` writes `path` atomically."""
    if codec in OPENCV_CODECS:
        return OpenCVEncoder(fps, codec, height, width, path)
    return VideoEncoder(fps, codec, height, width, path)


def encode_video(frames: np.ndarray, fps: int, codec: str) -> bytes:
    """(N, H, W, 3) uint8 frames as an MP4 (yuv420p); frame i is shown at i / fps seconds."""
    if codec in OPENCV_CODECS:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "video.mp4"
            enc = OpenCVEncoder(fps, codec, frames.shape[1], frames.shape[2], path)
            enc.add(frames)
            enc.save()
            return path.read_bytes()
    enc = VideoEncoder(fps, codec, frames.shape[1], frames.shape[2])
    enc.add(frames)
    return enc.finish()


def frame_pts(path: Path) -> tuple[np.ndarray, Fraction]:
    """The presentation timestamps of every frame (sorted, in units of the returned time base), read from
    the packets alone: cheap enough to check every file when a dataset is opened. OpenCV: frame indices,
    time base 1 / fps (constant frame rate assumed)."""
    return _cv_frame_pts(path) if backend() == "opencv" else _av_frame_pts(path)


def decode_frames(path: Path, wanted: np.ndarray) -> np.ndarray:
    """The frames whose pts (as `frame_pts` gives them) are in `wanted` (repeats allowed) as
    (len(wanted), H, W, 3) uint8 RGB."""
    return _cv_decode_frames(path, wanted) if backend() == "opencv" else _av_decode_frames(path, wanted)


# ------------------------------------------------------------------------------------------------ PyAV


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise DatasetError("video file is missing", file=path)
    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise DatasetError(f"video cannot be opened ({e})", file=path) from None
    if not container.streams.video:
        container.close()
        raise DatasetError("has no video stream", file=path, where="streams")
    return container


def _av_frame_pts(path: Path) -> tuple[np.ndarray, Fraction]:
    with _open(path) as container:
        stream = container.streams.video[0]
        try:
            pts = [p.pts for p in container.demux(stream) if p.pts is not None and p.size]
        except av.FFmpegError as e:
            raise DatasetError(f"video is truncated or corrupt ({e})", file=path, where="packets") from None
        return np.sort(np.asarray(pts, dtype=np.int64)), Fraction(stream.time_base)


def _av_decode_frames(path: Path, wanted: np.ndarray) -> np.ndarray:
    """Seeks to the keyframe before the first frame wanted, then decodes forward; a v3 file holds many episodes."""
    wanted = np.asarray(wanted, dtype=np.int64)
    need, first, last = set(wanted.tolist()), int(wanted.min()), int(wanted.max())
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        # One reformatter for all frames: VideoFrame.to_ndarray(format=...) builds a new swscale context per
        # frame, ~20x slower (1.1 ms vs 0.06 ms a 256x256 frame, measured).
        rgb = VideoReformatter()
        got: dict[int, np.ndarray] = {}
        for seek in (True, False):  # if the seek lands past the first frame wanted, decode from the start
            got.clear()
            try:
                if seek and first > 0:
                    container.seek(first, stream=stream, backward=True)
                elif not seek:
                    container.seek(0, stream=stream, backward=True)
                for frame in container.decode(stream):
                    if frame.pts is None:
                        continue
                    if frame.pts in need:
                        got[frame.pts] = rgb.reformat(frame, format="rgb24").to_ndarray()
                    if frame.pts >= last:
                        break
            except av.FFmpegError as e:
                raise DatasetError(f"video is truncated or corrupt ({e})", file=path, where="frames") from None
            if len(got) == len(need):
                break
    if len(got) != len(need):
        missing = sorted(need - set(got))
        t = float(missing[0] * stream.time_base)
        raise DatasetError(f"{len(missing)} frames could not be decoded, the first at {t:.3f} s",
                           file=path, where="frames")
    return np.stack([got[p] for p in wanted.tolist()])


# ------------------------------------------------------------------------------------------------ OpenCV


def _cv_capture(path: Path) -> cv2.VideoCapture:
    if not path.is_file():
        raise DatasetError("video file is missing", file=path)
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise DatasetError("OpenCV cannot open the video (truncated, corrupt, or no video stream)", file=path)
    return cap


def _cv_undecodable(path: Path, cap: cv2.VideoCapture) -> DatasetError:
    tag = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace").strip("\0 ").lower()
    codec = FOURCC_CODECS.get(tag, tag or "unknown codec")
    return DatasetError(f"the OpenCV video backend cannot decode its first frame: cannot decode {codec} without "
                        "PyAV; install av (pip install av)", file=path, where="frames")


def _cv_rate(path: Path, cap: cv2.VideoCapture) -> Fraction:
    fps = cap.get(cv2.CAP_PROP_FPS)
    if not fps > 0:
        raise DatasetError(f"OpenCV finds no frame rate (CAP_PROP_FPS {fps})", file=path, where="fps")
    return Fraction(fps).limit_denominator(1001)  # 29.97002997 -> 30000/1001


def _cv_frame_pts(path: Path) -> tuple[np.ndarray, Fraction]:
    """Frame indices 0..count-1 (the container's frame count; counted by decoding where it has none) and
    time base 1 / fps. The first frame is decoded, so an undecodable codec is found when a dataset opens."""
    cap = _cv_capture(path)
    try:
        rate = _cv_rate(path, cap)
        count = round(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if not cap.grab():
            if count > 0:
                raise _cv_undecodable(path, cap)
            count = 0
        elif count <= 0:
            count = 1
            while cap.grab():
                count += 1
    finally:
        cap.release()
    return np.arange(count, dtype=np.int64), 1 / rate


_cv_lock = threading.Lock()
# The capture the last decode left open, at most one: (file, inode, mtime, size, pid) -> (capture, next frame).
_cv_open: dict[tuple, tuple[cv2.VideoCapture, int]] = {}


def _cv_decode_frames(path: Path, wanted: np.ndarray) -> np.ndarray:
    """Decodes forward from the start, or from where the last call on the same file stopped when that is
    at or before the first frame wanted."""
    wanted = np.asarray(wanted, dtype=np.int64)
    need, first, last = set(wanted.tolist()), int(wanted.min()), int(wanted.max())
    got: dict[int, np.ndarray] = {}
    with _cv_lock:
        if not path.is_file():
            raise DatasetError("video file is missing", file=path)
        st = path.stat()
        key = (str(path.resolve()), st.st_ino, st.st_mtime_ns, st.st_size, os.getpid())
        cap, pos = _cv_open.pop(key, (None, 0))
        for old, _ in _cv_open.values():
            old.release()
        _cv_open.clear()
        if cap is None or pos > first:
            if cap is not None:
                cap.release()
            cap, pos = _cv_capture(path), 0
        try:
            rate = _cv_rate(path, cap)
            while pos <= last:
                if pos in need:
                    ok, bgr = cap.read()
                    if ok:
                        got[pos] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                else:
                    ok = cap.grab()  # decodes without the colour conversion
                if not ok:
                    if pos == 0:
                        raise _cv_undecodable(path, cap)
                    break
                pos += 1
        except BaseException:
            cap.release()
            raise
        if pos > last:
            _cv_open[key] = (cap, pos)
        else:
            cap.release()
    if len(got) != len(need):
        missing = sorted(need - set(got))
        t = float(missing[0] / rate)
        raise DatasetError(f"{len(missing)} frames could not be decoded, the first at {t:.3f} s (frame "
                           f"{missing[0]}; OpenCV decoded {pos})", file=path, where="frames")
    return np.stack([got[p] for p in wanted.tolist()])
