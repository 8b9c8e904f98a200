"""LeRobot datasets: read v2.0 / v2.1 / v3.0 (checked, known defects fixed and recorded), write v3.0
(resumable), convert any of them to v3.0, describe one."""

from .base import DatasetError, Episode
from .convert import convert, describe
from .reader import LeRobotDataset, open_dataset
from .video import decode_frames, encode_video, pick_codec
from .writer import LeRobotWriter

__all__ = ["DatasetError", "Episode", "LeRobotDataset", "LeRobotWriter", "convert", "decode_frames", "describe",
           "encode_video", "open_dataset", "pick_codec"]
